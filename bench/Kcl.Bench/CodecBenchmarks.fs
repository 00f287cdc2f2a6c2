/// The codec on the hot path: decoding a processRecords line, and encoding what the child writes.
module Kcl.Bench.CodecBenchmarks

open System
open BenchmarkDotNet.Attributes
open Kcl.Core

let private batchLine recordSize count =
    let random = Random 7

    let records =
        Array.init count (fun n ->
            let data = Array.zeroCreate recordSize
            random.NextBytes data

            {
                Data = data
                PartitionKey = sprintf "pk-%d" n
                SequenceNumber = SequenceNumber.parse ("4959033827149025660855969253836157109592157598913" + n.ToString "D7")
                SubSequenceNumber = 0L
                ApproximateArrivalTimestamp = Some(DateTimeOffset.FromUnixTimeMilliseconds 1700000000123L)
            })

    Json.encodeDaemonMessage Json.DaemonCharset.Utf8 (DaemonMessage.ProcessRecords(records, Some 0L))

[<MemoryDiagnoser>]
type Decode() =
    let mutable line: byte[] = [||]

    /// Record size in bytes and records per batch.
    [<Params("1024x500", "100x10000", "1024x10000")>]
    member val Shape = "1024x500" with get, set

    [<GlobalSetup>]
    member this.Setup() =
        let parts = this.Shape.Split 'x'
        line <- batchLine (int parts[0]) (int parts[1])

    [<Benchmark>]
    member _.ProcessRecords() =
        match Json.decodeDaemonMessage (ReadOnlySpan line) with
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
