/// Pre-generated streams: every line the daemon side writes is encoded before the clock starts, so the driver does
/// nothing per record but copy bytes.
module ProcessBench.Workload

open System
open Kcl.Core

type Workload =
    {
        Name: string
        RecordSize: int
        BatchSize: int
        Records: int
        /// The encoded lines, each ending in '\n': initialize, the batches, shardEnded.
        Initialize: byte[]
        Batches: byte[][]
        ShardEnded: byte[]
        /// The success reply to any checkpoint request.
        Reply: byte[]
    }

    member this.PayloadBytes = int64 this.Records * int64 this.RecordSize

// On the pinned heap, never changed once made: the driver splices them into the child's pipe (Driver.put).
let private line (message: DaemonMessage) =
    let text = Json.encodeDaemonMessage Json.DaemonCharset.Utf8 message
    let line = GC.AllocateUninitializedArray<byte>(text.Length + 1, pinned = true)
    text.CopyTo(line, 0)
    line[text.Length] <- 10uy
    line

/// `records` records of `recordSize` bytes of random printable ASCII (the samples decode records as UTF-8 text, as
/// most producers' JSON is) in batches of `batchSize`, with 56-digit sequence numbers.
let create name recordSize batchSize records =
    let random = Random 42

    let payload () =
        Array.init recordSize (fun _ -> byte (random.Next(32, 127)))

    let batches =
        [|
            for first in 0..batchSize .. records - 1 ->
                let count = min batchSize (records - first)

                let batch =
                    Array.init count (fun i ->
                        let n = first + i

                        {
                            Data = ReadOnlyMemory(payload ())
                            PartitionKey = sprintf "pk-%d" (n % 64)
                            SequenceNumber = SequenceNumber.parse ("4959033827149025660855969253836157109592157598913" + n.ToString "D7")
                            SubSequenceNumber = 0L
                            ApproximateArrivalTimestamp = Some(DateTimeOffset.FromUnixTimeMilliseconds(1700000000000L + int64 n))
                        })

                line (DaemonMessage.ProcessRecords(batch, Some 0L))
        |]

    {
        Name = name
        RecordSize = recordSize
        BatchSize = batchSize
        Records = records
        Initialize =
            line (DaemonMessage.Initialize(ShardId "shardId-000000000000", Some(SequenceNumber.ofSentinel Sentinel.TrimHorizon), Some 0L))
        Batches = batches
        ShardEnded = line DaemonMessage.ShardEnded
        Reply = line (DaemonMessage.CheckpointReply(None, None, None))
    }
