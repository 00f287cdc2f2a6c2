/// One batch through the whole run, in memory: the line read and decoded, the lifecycle, the processor called on the
/// thread pool, its checkpoint written, the daemon's reply read, the status written. No pipe, no process: what the
/// library adds to each batch on top of the operating system's work.
module Kcl.Bench.InterpreterBenchmarks

open System
open System.IO
open System.IO.Pipelines
open System.Threading
open System.Threading.Tasks
open BenchmarkDotNet.Attributes
open Kcl.Core
open Microsoft.Extensions.Logging.Abstractions

let private line (message: DaemonMessage) =
    Array.append (Json.encodeDaemonMessage Json.DaemonCharset.Utf8 message) "\n"B

// Counts and checkpoints every batch, as the samples do, without logging.
let private counting =
    Processor.create 0L (fun count event ->
        match event with
        | Event.RecordsReceived(records, _) -> count + int64 records.Length, [ Command.Checkpoint CheckpointTarget.LastDelivered ]
        | Event.ShardEnded -> count, [ Command.Checkpoint CheckpointTarget.LastDelivered ]
        | _ -> count, [])

[<MemoryDiagnoser>]
type BatchRoundTrip() =
    let mutable toChild: Stream = Stream.Null
    let mutable fromChild: StreamReader = StreamReader.Null
    let mutable run: Task<int> = Task.FromResult 0
    let mutable batch: byte[] = [||]
    let reply = line (DaemonMessage.CheckpointReply(None, None, None))

    // Answers checkpoints until the status comes, as the daemon does.
    let untilStatus () =
        let mutable waiting = true

        while waiting do
            match fromChild.ReadLine() with
            | null -> failwith "the run ended in the middle of a batch"
            | text when text.Contains "\"status\"" -> waiting <- false
            | text when text.Contains "\"checkpoint\"" ->
                toChild.Write reply
                toChild.Flush()
            | _ -> ()

    let send (bytes: byte[]) =
        toChild.Write bytes
        toChild.Flush()
        untilStatus ()

    /// Records of 100 bytes per batch.
    [<Params(1, 500)>]
    member val Records = 500 with get, set

    [<GlobalSetup>]
    member this.Setup() =
        batch <- Array.append (CodecBenchmarks.batchLine 100 this.Records) "\n"B
        let input = Pipe()
        let output = Pipe()
        toChild <- input.Writer.AsStream()
        fromChild <- new StreamReader(output.Reader.AsStream())

        let options =
            { RunOptions.Default with
                LoggerFactory = Some NullLoggerFactory.Instance
                Streams = Some(input.Reader.AsStream(), output.Writer.AsStream()) }

        run <- Processor.runWith options counting CancellationToken.None
        send (line (DaemonMessage.Initialize(ShardId "shardId-000000000000", None, None)))

    /// processRecords in, a checkpoint out, its reply in, the status out.
    [<Benchmark>]
    member _.OneBatch() = send batch

    [<GlobalCleanup>]
    member _.Cleanup() =
        send (line DaemonMessage.ShardEnded)
        toChild.Dispose()

        if run.Result <> 0 then
            failwithf "the run ended with exit code %d" run.Result
