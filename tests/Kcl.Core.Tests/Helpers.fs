(*
    Generators for the protocol's types, shared by every test file. FsCheck could build these reflectively, but
    the constrained fields (decimal sequence numbers, whole-millisecond timestamps, well-formed Unicode) need care,
    and every test file should draw from the same distribution.
*)
module Kcl.Core.Tests.Generators

open System
open FsCheck
open FsCheck.FSharp
open Kcl.Core

/// The four sentinel names a sequence number may carry instead of digits.
let sentinelNames = [ "TRIM_HORIZON"; "LATEST"; "AT_TIMESTAMP"; "SHARD_END" ]

/// Decimal digit strings of 1 to 128 digits, leaning towards the 56 digits real Kinesis sequence numbers have.
let digitString: Gen<string> =
    gen {
        let! length =
            Gen.frequency
                [
                    3, Gen.choose (1, 20)
                    3, Gen.constant 56
                    2, Gen.choose (1, 128)
                    1, Gen.constant 128
                ]

        let! digits = Gen.arrayOfLength length (Gen.elements [ '0' .. '9' ])
        return String digits
    }

/// Sequence numbers: digit strings and, now and then, a sentinel.
let sequenceNumber: Gen<SequenceNumber> =
    Gen.frequency [ 5, digitString; 1, Gen.elements sentinelNames ]
    |> Gen.map SequenceNumber.parse

// One Unicode scalar value (as a string, since astral ones need two UTF-16 units), drawn from the classes a JSON
// codec gets wrong: control characters, quotes and backslashes, non-ASCII BMP characters, surrogate pairs.
let private scalar: Gen<string> =
    let ofCode (code: int) = Char.ConvertFromUtf32 code

    Gen.frequency
        [
            6, Gen.choose (0x20, 0x7E) |> Gen.map ofCode
            2, Gen.choose (0x00, 0x1F) |> Gen.map ofCode
            2, Gen.elements [ "\""; "\\"; "/"; "\u007F"; "\u2028"; "\uFEFF"; "\u00FC"; "\u20AC" ]
            2,
            Gen.oneof [ Gen.choose (0x80, 0xD7FF); Gen.choose (0xE000, 0xFFFF) ]
            |> Gen.map ofCode
            2, Gen.choose (0x10000, 0x10FFFF) |> Gen.map ofCode
        ]

/// Well-formed Unicode strings (no lone surrogates: a JVM writes those as '?', so they cannot round-trip).
let unicodeString: Gen<string> = Gen.listOf scalar |> Gen.map (String.concat "")

/// Arbitrary payloads, including empty ones and the occasional few kilobytes.
let payload: Gen<byte[]> =
    let bytes = Gen.choose (0, 255) |> Gen.map byte

    Gen.frequency
        [
            1, Gen.constant [||]
            6, Gen.arrayOf bytes
            1, Gen.choose (1000, 5000) |> Gen.bind (fun n -> Gen.arrayOfLength n bytes)
        ]

/// Any 64-bit integer, with the edges and small values over-represented.
let int64Value: Gen<int64> =
    Gen.frequency
        [
            3, Gen.choose (0, 10) |> Gen.map int64
            2, Gen.choose64 (-(1L <<< 62), 1L <<< 62)
            1, Gen.elements [ Int64.MinValue; Int64.MaxValue; -1L ]
        ]

/// Arrival timestamps in whole milliseconds, anywhere in DateTimeOffset's range: the wire carries epoch millis.
let arrivalTimestamp: Gen<DateTimeOffset> =
    let lowest = DateTimeOffset.MinValue.ToUnixTimeMilliseconds()
    let highest = DateTimeOffset.MaxValue.ToUnixTimeMilliseconds()

    Gen.frequency
        [
            3, Gen.choose64 (1_500_000_000_000L, 1_900_000_000_000L)
            1, Gen.choose64 (lowest, highest)
            1, Gen.elements [ lowest; highest; 0L ]
        ]
    |> Gen.map DateTimeOffset.FromUnixTimeMilliseconds

/// Records with arbitrary payloads and Unicode partition keys.
let record: Gen<Record> =
    gen {
        let! data = payload
        let! partitionKey = unicodeString
        let! sequence = sequenceNumber
        let! subSequence = Gen.frequency [ 4, Gen.constant 0L; 1, int64Value ]
        let! arrival = Gen.optionOf arrivalTimestamp

        return
            {
                Data = ReadOnlyMemory data
                PartitionKey = partitionKey
                SequenceNumber = sequence
                SubSequenceNumber = subSequence
                ApproximateArrivalTimestamp = arrival
            }
    }

/// The checkpoint errors the library knows by name.
let knownCheckpointErrors =
    [
        CheckpointError.Throttling
        CheckpointError.Dependency
        CheckpointError.Shutdown
        CheckpointError.InvalidState
        CheckpointError.IllegalArgument
    ]

/// Checkpoint errors, known names and others (never an `Other` holding a known name: that decodes as the known case).
let checkpointError: Gen<CheckpointError> =
    Gen.oneof
        [
            Gen.elements knownCheckpointErrors
            unicodeString
            |> Gen.map CheckpointError.Other
            |> Gen.filter (fun error -> CheckpointError.OfName error.Name = error)
        ]

/// Every daemon message, each case equally likely.
let daemonMessage: Gen<DaemonMessage> =
    Gen.oneof
        [
            Gen.map3
                (fun shard sequence sub -> DaemonMessage.Initialize(ShardId shard, sequence, sub))
                unicodeString
                (Gen.optionOf sequenceNumber)
                (Gen.optionOf int64Value)
            Gen.map2
                (fun records behind -> DaemonMessage.ProcessRecords(records, behind))
                (Gen.arrayOf record |> Gen.scaleSize (fun size -> size / 5))
                (Gen.optionOf int64Value)
            Gen.constant DaemonMessage.LeaseLost
            Gen.constant DaemonMessage.ShardEnded
            Gen.constant DaemonMessage.ShutdownRequested
            Gen.elements
                [
                    ShutdownReason.Terminate
                    ShutdownReason.Zombie
                    ShutdownReason.ShardEnd
                    ShutdownReason.LeaseLost
                ]
            |> Gen.map DaemonMessage.Shutdown
            Gen.map3
                (fun sequence sub error -> DaemonMessage.CheckpointReply(sequence, sub, error))
                (Gen.optionOf (Gen.oneof [ digitString; unicodeString ]))
                (Gen.optionOf int64Value)
                (Gen.optionOf checkpointError)
        ]

/// Every child message: statuses for any action name, checkpoints at no position or an explicit one.
let childMessage: Gen<ChildMessage> =
    Gen.oneof
        [
            Gen.oneof
                [
                    Gen.elements ActionNames.all
                    unicodeString
                ]
            |> Gen.map ChildMessage.Status
            Gen.constant (ChildMessage.Checkpoint CheckpointTarget.LastDelivered)
            Gen.map2
                (fun sequence sub -> ChildMessage.Checkpoint(CheckpointTarget.At(sequence, sub)))
                sequenceNumber
                (Gen.optionOf int64Value)
        ]

/// Runs a property with FsCheck's throwing runner, so a counterexample fails the xunit test.
let check (maxTest: int) (property: Property) =
    Check.One(Config.QuickThrowOnFailure.WithMaxTest maxTest, property)
