(*
    A dry run of one shard, while the run starts: the real driver, over real pipes, with a child in this process.
    The tool runs with tiered compilation off (bench/README.md, "Local daemon"), so each method is compiled, fully
    optimised, on its first call. Without a rehearsal those first calls came with the first batches, while the child
    waited for its replies: a profile showed kcl-local compiling the session's reading of checkpoints and statuses and
    the encoding of batches for about 100 ms after the first `processRecords`. Rehearsing the session alone, in
    memory, left about 40 ms of it: the driver's own tasks, its pipe reads and its writes.
*)
module internal Kcl.Local.Rehearsal

open System
open System.IO
open System.IO.Pipes
open System.Threading
open System.Threading.Tasks
open Kcl.Core

let private status action =
    sprintf """{"action":"status","responseFor":"%s"}""" action

let private checkpoint (sequenceNumber: string) =
    sprintf """{"action":"checkpoint","sequenceNumber":%s,"subSequenceNumber":null}""" sequenceNumber

/// The action a daemon line names, found without a JSON parser: the rehearsal's own lines only.
let private actionOf (line: string) =
    let key = "\"action\":\""
    let start = line.IndexOf key + key.Length
    line.Substring(start, line.IndexOf('"', start) - start)

/// A well-behaved child in this process, over real pipes: it checkpoints each batch at its end and the shard's end
/// at SHARD_END, reads each checkpoint's reply, answers every action with its status, and exits at the end of its
/// stdin.
let private inProcessChild () : ChildPipes =
    let stdin = new AnonymousPipeServerStream(PipeDirection.Out)
    let stdout = new AnonymousPipeServerStream(PipeDirection.In)
    let stderr = new AnonymousPipeServerStream(PipeDirection.In)
    let stderrText = new StreamReader(stderr)
    let exited = TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)
    let mutable exitCode = None

    let answer () =
        try
            use input =
                new StreamReader(new AnonymousPipeClientStream(PipeDirection.In, stdin.ClientSafePipeHandle))

            use output =
                new StreamWriter(
                    new AnonymousPipeClientStream(PipeDirection.Out, stdout.ClientSafePipeHandle),
                    NewLine = "\n",
                    AutoFlush = true
                )

            // Closed at once: the driver reads the child's stderr to its end.
            (new AnonymousPipeClientStream(PipeDirection.Out, stderr.ClientSafePipeHandle)).Dispose()
            let mutable line = input.ReadLine()

            while not (isNull line) do
                let action = actionOf line

                match action with
                | "processRecords" -> Some "null"
                | "shardEnded" -> Some "\"SHARD_END\""
                | _ -> None
                |> Option.iter (fun position ->
                    output.WriteLine(checkpoint position)
                    input.ReadLine() |> ignore)

                output.WriteLine(status action)
                line <- input.ReadLine()

            exitCode <- Some 0
        finally
            exited.TrySetResult() |> ignore

    Thread(answer, IsBackground = true, Name = "kcl-local rehearsal child").Start()

    { new ChildPipes with
        member _.Stdin = stdin
        member _.Stdout = stdout
        member _.Stderr = stderrText
        member _.ExitCode = exitCode
        member _.WaitForExitAsync token = exited.Task.WaitAsync token
        member _.Kill() = stdin.Dispose()

        member _.Dispose() =
            stdin.Dispose()
            stdout.Dispose()
            stderrText.Dispose()
    }

/// One shard's whole run, driven as a real one is: `initialize`, two batches of two records, each checkpointed at
/// its end, and `shardEnded` checkpointed at SHARD_END. Returns the driver's result, for tests.
let rehearse (charset: Json.DaemonCharset) : Task<ShardResult> =
    let feed = ShardFeed 0
    let arrival = DateTimeOffset.UtcNow

    for _ in 1..4 do
        feed.Add({ PartitionKey = "rehearsal"; Data = Array.create 64 (byte 'k') }, arrival)

    feed.Complete()

    let settings =
        { DriverSettings.Create([], "", 2) with
            WaitLimit = TimeSpan.FromSeconds 10.0
            Charset = charset
            History = SessionHistory.Whole
        }

    let start =
        {
            Feed = feed
            Checkpoint = ("TRIM_HORIZON", 0L)
            Position = 0
            PreviouslyDelivered = 0
        }

    ShardDriver.drive
        (inProcessChild >> Ok)
        settings
        DriverHooks.Silent
        (ShardProgress(feed.ShardId, feed.Count))
        start
        CancellationToken.None
        CancellationToken.None

let private started = ref 0

/// Starts the rehearsal on the thread pool, once per process; the run does not wait for it.
let start (charset: Json.DaemonCharset) =
    if Interlocked.Exchange(&started.contents, 1) = 0 then
        Task.Run(fun () ->
            task {
                // Only a head start: a rehearsal that failed leaves the real run's first calls to compile.
                try
                    let! _ = rehearse charset
                    ()
                with _ ->
                    ()
            }
            :> Task)
        |> ignore
