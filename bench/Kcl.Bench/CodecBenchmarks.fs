/// The codec on the hot path: decoding a processRecords line, and encoding what the child writes.
module Kcl.Bench.CodecBenchmarks

open System
open System.Buffers
open BenchmarkDotNet.Attributes
open Kcl.Core

// 49 digits; with the record's index in seven more, a sequence number of the real length (56).
let private sequencePrefix = "4959033827149025660855969253836157109592157598913"

/// A batch of records: random payloads of `recordSize` bytes, each its own partition key and sequence number.
let internal batchRecords recordSize count =
    let random = Random 7

    Array.init count (fun n ->
        let data = Array.zeroCreate recordSize
        random.NextBytes data

        {
            Data = ReadOnlyMemory data
            PartitionKey = sprintf "pk-%d" n
            SequenceNumber = SequenceNumber.parse (sequencePrefix + n.ToString "D7")
            SubSequenceNumber = 0L
            ApproximateArrivalTimestamp = Some(DateTimeOffset.FromUnixTimeMilliseconds 1700000000123L)
        })

/// The daemon's `processRecords` line for such a batch.
let internal batchLine recordSize count =
    Json.encodeDaemonMessage
        Json.DaemonCharset.Utf8
        (DaemonMessage.ProcessRecords(batchRecords recordSize count, Some 0L))

// The line as the reader hands on one too long for its buffer: a chain of pieces of `size` bytes.
let private inPieces (size: int) (line: byte[]) =
    let first = LineSegment(ReadOnlyMemory(line, 0, min size line.Length), 0L)
    let mutable last = first

    for start in size..size .. line.Length - 1 do
        last <- last.Append(ReadOnlyMemory(line, start, min size (line.Length - start)))

    ReadOnlySequence<byte>(first, 0, last, last.Memory.Length)

[<MemoryDiagnoser>]
type Decode() =
    let mutable line: byte[] = [||]
    let mutable pieces = ReadOnlySequence<byte>.Empty

    /// Record size in bytes and records per batch.
    [<Params("1024x500", "100x10000", "1024x10000")>]
    member val Shape = "1024x500" with get, set

    [<GlobalSetup>]
    member this.Setup() =
        let parts = this.Shape.Split 'x'
        line <- batchLine (int parts[0]) (int parts[1])
        pieces <- inPieces 65536 line

    [<Benchmark>]
    member _.ProcessRecords() =
        match Json.decodeDaemonMessage (ReadOnlySpan line) with
        | Ok(DaemonMessage.ProcessRecords(records, _)) -> records.Length
        | _ -> -1

    /// The same line in 64 KiB pieces, as the line reader handed on every line longer than 64 KiB before its buffer
    /// could grow to 1 MiB (and still hands on a longer line, in pieces of 1 MiB).
    [<Benchmark>]
    member _.ProcessRecordsIn64KiBPieces() =
        match Json.decodeDaemonSequence pieces with
        | Ok(DaemonMessage.ProcessRecords(records, _)) -> records.Length
        | _ -> -1

    /// What bench/BareLoop does with a line: every record's data decoded from base64, nothing else kept.
    [<Benchmark(Baseline = true)>]
    member _.BareLoop() =
        let mutable reader = System.Text.Json.Utf8JsonReader(ReadOnlySpan line)
        let mutable count = 0

        while reader.Read() do
            if
                reader.TokenType = System.Text.Json.JsonTokenType.PropertyName
                && reader.ValueTextEquals "data"B
            then
                reader.Read() |> ignore
                let data = reader.GetBytesFromBase64()
                count <- count + (if data.Length >= 0 then 1 else 0)

        count

[<MemoryDiagnoser>]
type Encode() =
    let status = ChildMessage.Status "processRecords"

    let checkpoint =
        ChildMessage.Checkpoint(
            CheckpointTarget.At(SequenceNumber.parse "49590338271490256608559692538361571095921575989136588898", Some 0L)
        )

    [<Benchmark>]
    member _.Status() = Json.encodeChildMessage status

    [<Benchmark>]
    member _.Checkpoint() = Json.encodeChildMessage checkpoint

/// What kcl-local does with every batch it sends: its `processRecords` line encoded into an array it reuses.
[<MemoryDiagnoser>]
type DaemonBatch() =
    let mutable message = DaemonMessage.ProcessRecords([||], None)
    let mutable line: byte[] = [||]

    /// Record size in bytes and records per batch.
    [<Params("100x500", "1024x500")>]
    member val Shape = "100x500" with get, set

    [<GlobalSetup>]
    member this.Setup() =
        let parts = this.Shape.Split 'x'
        message <- DaemonMessage.ProcessRecords(batchRecords (int parts[0]) (int parts[1]), Some 0L)

    [<Benchmark>]
    member _.EncodeInto() =
        let reuse length =
            if line.Length < length then
                line <- Array.zeroCreate length

            line

        (DaemonLine.encodeInto reuse Json.DaemonCharset.Utf8 "\n" message).Count
