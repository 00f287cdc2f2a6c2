module Kcl.Core.Tests.InterpreterTests

open System
open System.Buffers
open System.Collections.Concurrent
open System.IO
open System.Text
open System.Threading
open System.Threading.Tasks
open Kcl.Core
open Kcl.Core.Tests.Harness
open FsCheck
open FsCheck.FSharp
open Microsoft.Extensions.Logging
open Xunit

let private seqNo = SequenceNumber.parse

let private A = "49590338271490256608559692538361571095921575989136588898"
let private B = "49590338271490256608559692538362780021741190618311294978"
let private C = "49590338271490256608559692538363988947560805247485001730"
let private K = "49590338271490256608559692540925702759324208523137515618"

let private at sequenceNumber sub =
    Command.Checkpoint(CheckpointTarget.At(seqNo sequenceNumber, sub))

let private latest = Command.Checkpoint CheckpointTarget.LastDelivered

/// Replays transcript `id` against the scripted processor and returns what the processor saw and the log.
let private replay id script =
    task {
        let logger = new CapturingLogger()
        let processor, seen = scripted script
        let sessions = transcripts[id]

        for session in sessions do
            let! code, rest = runInProcess (testOptions logger) processor (fun toChild fromChild -> playThenClose session toChild fromChild)
            Assert.Equal(0, code)
            Assert.True(String.IsNullOrWhiteSpace rest, sprintf "the child wrote more than the transcript: %s" rest)

        return List.ofSeq seen, logger.Entries
    }

let private records events =
    events
    |> List.choose (function
        | Event.RecordsReceived(records, behind) -> Some(records, behind)
        | _ -> None)

let private checkpointOutcomes events =
    events
    |> List.choose (function
        | Event.CheckpointSucceeded _ -> Some None
        | Event.CheckpointFailed(_, failure) -> Some(Some failure.Error)
        | _ -> None)

[<Fact>]
let ``T01 initialize on a fresh shard`` () =
    task {
        let! seen, _ = replay "T01" idle
        Assert.Equal<Event list>([ Event.Initialized(ShardId "shardId-000000000000", Some(SequenceNumber.ofSentinel Sentinel.TrimHorizon), Some 0L) ], seen)
    }

[<Fact>]
let ``T02 initialize resuming from an aggregated checkpoint keeps all 56 digits`` () =
    task {
        let! seen, _ = replay "T02" idle
        Assert.Equal<Event list>([ Event.Initialized(ShardId "shardId-000000000001", Some(seqNo A), Some 3L) ], seen)
    }

[<Fact>]
let ``T03 initialize with null checkpoint fields`` () =
    task {
        let! seen, _ = replay "T03" idle
        Assert.Equal<Event list>([ Event.Initialized(ShardId "shardId-000000000002", None, None) ], seen)
    }

[<Fact>]
let ``T04 checkpoint at an explicit record position`` () =
    task {
        let! seen, _ = replay "T04" { idle with OnRecords = fun _ -> [ at B (Some 0L) ] }

        match records seen with
        | [ [| first; second |], Some 0L ] ->
            Assert.Equal<byte[]>("hello"B, first.Data.ToArray())
            Assert.Equal("pk-1", first.PartitionKey)
            Assert.Equal(seqNo A, first.SequenceNumber)
            Assert.Equal(Some(DateTimeOffset.Parse "2023-11-14T22:13:20.123Z"), first.ApproximateArrivalTimestamp)
            Assert.Equal<byte[]>("world"B, second.Data.ToArray())
            Assert.Equal(Some(DateTimeOffset.Parse "2023-11-14T22:13:20.456Z"), second.ApproximateArrivalTimestamp)
        | other -> failwithf "unexpected batches %A" other

        Assert.Equal<CheckpointError option list>([ None ], checkpointOutcomes seen)
    }

[<Fact>]
let ``T05 checkpoint with no arguments`` () =
    task {
        let! seen, _ = replay "T05" { idle with OnRecords = fun _ -> [ latest ] }

        match records seen with
        | [ batch, Some 1500L ] ->
            Assert.Equal<string[]>(
                [| "order-1"; "order-2"; "order-3" |],
                batch |> Array.map (fun r -> Encoding.UTF8.GetString r.Data.Span)
            )
        | other -> failwithf "unexpected batches %A" other

        Assert.Equal<CheckpointError option list>([ None ], checkpointOutcomes seen)
    }

[<Fact>]
let ``T06 several checkpoints before one status`` () =
    task {
        let! seen, _ = replay "T06" { idle with OnRecords = fun _ -> [ at A (Some 0L); at B (Some 0L) ] }
        Assert.Equal<CheckpointError option list>([ None; None ], checkpointOutcomes seen)
    }

[<Fact>]
let ``T07 a throttled checkpoint is retried by the library and the processor sees one success`` () =
    task {
        let! seen, log = replay "T07" { idle with OnRecords = fun _ -> [ latest ] }
        Assert.Equal<CheckpointError option list>([ None ], checkpointOutcomes seen)
        Assert.Contains(log, fun (_, message) -> message.Contains "ThrottlingException")
    }

[<Fact>]
let ``T08 a non-retryable checkpoint error reaches the processor, which goes on`` () =
    task {
        let! seen, _ = replay "T08" { idle with OnRecords = fun _ -> [ at "12345" None ] }
        Assert.Equal<CheckpointError option list>([ Some CheckpointError.IllegalArgument ], checkpointOutcomes seen)
    }

[<Fact>]
let ``T09 empty batches, with and without millisBehindLatest`` () =
    task {
        let! seen, _ = replay "T09" idle
        Assert.Equal<(Kcl.Core.Record[] * int64 option) list>([ [||], Some 120000L; [||], None ], records seen)
    }

[<Fact>]
let ``T10 checkpoint inside a KPL aggregate`` () =
    task {
        let! seen, _ = replay "T10" { idle with OnRecords = fun _ -> [ at K (Some 1L) ] }

        match records seen with
        | [ batch, _ ] ->
            Assert.Equal<int64[]>([| 0L; 1L; 2L |], batch |> Array.map _.SubSequenceNumber)
            Assert.All(batch, fun r -> Assert.Equal(seqNo K, r.SequenceNumber))
        | other -> failwithf "unexpected batches %A" other
    }

[<Fact>]
let ``T11 binary and unicode payloads arrive untouched`` () =
    task {
        let! seen, _ = replay "T11" idle

        match records seen with
        | [ [| binary; emoji; escaped; empty |], _ ] ->
            Assert.Equal<byte[]>([| 0x00uy; 0xFFuy; 0xFEuy; 0x0Auy; 0x0Duy; 0x22uy |], binary.Data.ToArray())
            Assert.Equal<byte[]>([| 0xF0uy; 0x9Fuy; 0x98uy; 0x80uy |], emoji.Data.ToArray())
            Assert.Equal("ключ-ü-€", emoji.PartitionKey)
            Assert.Equal("héllo wörld", Encoding.UTF8.GetString escaped.Data.Span)
            Assert.Equal("tab\tq\"bs\\", escaped.PartitionKey)
            Assert.Empty(empty.Data.ToArray())
        | other -> failwithf "unexpected batches %A" other
    }

[<Fact>]
let ``T12 shardEnded checkpoints at SHARD_END, then exits at EOF`` () =
    task {
        let! seen, _ = replay "T12" { idle with OnShardEnded = [ latest ] }
        Assert.Equal<CheckpointError option list>([ None ], checkpointOutcomes seen)
    }

[<Fact>]
let ``T12 the library checkpoints SHARD_END itself when the processor does not, and warns`` () =
    task {
        let! _, log = replay "T12" idle
        Assert.Contains(log, fun (level, message) -> level = LogLevel.Warning && message.Contains "SHARD_END")
    }

[<Fact>]
let ``T13 shardEnded with the explicit SHARD_END sentinel`` () =
    task {
        let! seen, _ = replay "T13" { idle with OnShardEnded = [ Command.Checkpoint(CheckpointTarget.At(SequenceNumber.shardEnd, None)) ] }
        Assert.Equal<CheckpointError option list>([ None ], checkpointOutcomes seen)
    }

[<Fact>]
let ``T14 leaseLost is answered without a checkpoint`` () =
    task {
        let! seen, _ = replay "T14" idle
        Assert.Equal<Event list>([ Event.LeaseLost ], seen)
    }

[<Fact>]
let ``T14 a checkpoint asked for in leaseLost fails locally and nothing is sent`` () =
    task {
        let processor =
            Processor.create () (fun () event ->
                match event with
                | Event.LeaseLost -> (), [ latest ]
                | _ -> (), [])

        let logger = new CapturingLogger()
        // The transcript's exact lines prove no checkpoint line was written.
        let! code, _ = runInProcess (testOptions logger) processor (fun toChild fromChild -> playThenClose transcripts["T14"].Head toChild fromChild)
        Assert.Equal(0, code)
    }

[<Fact>]
let ``T15 shutdownRequested takes a final checkpoint, then leaseLost`` () =
    task {
        let! seen, _ = replay "T15" { idle with OnShutdownRequested = [ latest ] }
        Assert.Equal<Event list>([ Event.ShutdownRequested; Event.CheckpointSucceeded CheckpointTarget.LastDelivered; Event.LeaseLost ], seen)
    }

[<Fact>]
let ``T16 shutdownRequested after the lease moved is still answered`` () =
    task {
        let! seen, _ = replay "T16" { idle with OnShutdownRequested = [ latest ] }
        Assert.Equal<CheckpointError option list>([ Some CheckpointError.Shutdown ], checkpointOutcomes seen)
    }

[<Fact>]
let ``T16 a lease-lost failure escalated from shutdownRequested is answered too`` () =
    task {
        let processor =
            Processor.create () (fun () event ->
                match event with
                | Event.ShutdownRequested -> (), [ latest ]
                | Event.CheckpointFailed(_, failure) -> (), [ Command.Escalate failure ]
                | _ -> (), [])

        let logger = new CapturingLogger()
        let! code, _ = runInProcess (testOptions logger) processor (fun toChild fromChild -> playThenClose transcripts["T16"].Head toChild fromChild)
        Assert.Equal(0, code)
    }

[<Fact>]
let ``T17 legacy shutdown TERMINATE behaves as shardEnded`` () =
    task {
        let! seen, _ = replay "T17" { idle with OnShardEnded = [ latest ] }
        Assert.Equal<Event list>([ Event.ShardEnded; Event.CheckpointSucceeded CheckpointTarget.LastDelivered ], seen)
    }

[<Fact>]
let ``T18 legacy shutdown ZOMBIE behaves as leaseLost`` () =
    task {
        let! seen, _ = replay "T18" idle
        Assert.Equal<Event list>([ Event.LeaseLost ], seen)
    }

[<Fact>]
let ``T19 legacy shutdown from a KCL 2.0 daemon, in two child processes`` () =
    task {
        Assert.Equal(2, transcripts["T19"].Length)
        let! seen, _ = replay "T19" { idle with OnShardEnded = [ latest ] }
        Assert.Equal<Event list>([ Event.ShardEnded; Event.CheckpointSucceeded CheckpointTarget.LastDelivered; Event.LeaseLost ], seen)
    }

[<Fact>]
let ``T20 a complete session`` () =
    task {
        let script =
            {
                OnRecords = fun batch -> if batch.Length > 0 then [ at B (Some 0L) ] else []
                OnShardEnded = [ latest ]
                OnShutdownRequested = []
            }

        let! seen, _ = replay "T20" script
        Assert.Equal(2, (records seen).Length)
        Assert.Equal<CheckpointError option list>([ None; None ], checkpointOutcomes seen)
    }

[<Fact>]
let ``every transcript in TRANSCRIPTS.md is replayed by a test here`` () =
    Assert.Equal<string list>([ for i in 1..20 -> sprintf "T%02d" i ], transcripts |> Map.keys |> List.ofSeq)

(* Failure paths over real pipes. *)

let private runLines options processor (lines: string list) =
    task {
        let logger = new CapturingLogger()

        let! code, rest =
            runInProcess
                ({ testOptions logger with OnProcessorException = options })
                processor
                (fun toChild fromChild ->
                    task {
                        for line in lines do
                            do! toChild.WriteAsync(Encoding.UTF8.GetBytes(line + "\n"))

                        do! toChild.FlushAsync()
                    })

        return code, rest, logger.Entries
    }

let private batchLine =
    """{"action":"processRecords","records":[{"data":"YWJj","partitionKey":"k","sequenceNumber":"1","approximateArrivalTimestamp":1,"subSequenceNumber":0,"action":"record"}],"millisBehindLatest":0}"""

let private failing =
    Processor.create () (fun () event ->
        match event with
        | Event.RecordsReceived _ -> (), [ Command.Fail "cannot store the batch" ]
        | _ -> (), [])

[<Fact>]
let ``a failing processor exits with the processor-failure code and sends no status`` () =
    task {
        let! code, rest, log = runLines ExceptionPolicy.FailFast failing [ batchLine ]
        Assert.Equal(int ExitCode.ProcessorFailed, code)
        Assert.True(String.IsNullOrWhiteSpace rest, rest)
        Assert.Contains(log, fun (level, message) -> level = LogLevel.Error && message.Contains "cannot store the batch")
    }

[<Fact>]
let ``under SkipFailedBatch a failing processor is answered and logged`` () =
    task {
        let logger = new CapturingLogger()

        let! code, _ =
            runInProcess
                { testOptions logger with OnProcessorException = ExceptionPolicy.SkipFailedBatch }
                failing
                (fun toChild fromChild ->
                    task {
                        do! toChild.WriteAsync(Encoding.UTF8.GetBytes(batchLine + "\n"))
                        do! toChild.FlushAsync()
                        let! status = readLine fromChild
                        Assert.Equal("""{"action":"status","responseFor":"processRecords"}""", status)
                        toChild.Dispose()
                    })

        Assert.Equal(0, code)
        Assert.Contains(logger.Entries, fun (level, message) -> level = LogLevel.Error && message.Contains "SkipFailedBatch")
    }

[<Fact>]
let ``an undecodable line fails fast with its own exit code and is logged with the line`` () =
    task {
        let! code, rest, log = runLines ExceptionPolicy.FailFast failing [ """{"action":"processRecords","records":"nope"}""" ]
        Assert.Equal(int ExitCode.UndecodableInput, code)
        Assert.True(String.IsNullOrWhiteSpace rest, rest)
        Assert.Contains(log, fun (level, message) -> level = LogLevel.Error && message.Contains "\"records\":\"nope\"")
    }

[<Fact>]
let ``a SHARD_END checkpoint that keeps failing exits with its own code and no status`` () =
    task {
        let throttled =
            """{"action":"checkpoint","sequenceNumber":null,"subSequenceNumber":null,"error":"ThrottlingException"}"""

        let logger = new CapturingLogger()

        let! code, rest =
            runInProcess
                { testOptions logger with Retry = { RetryPolicy.NoRetries with MaxAttempts = 2; FullJitter = false; InitialBackoff = TimeSpan.FromMilliseconds 1.0 } }
                (Processor.create () (fun () _ -> (), []))
                (fun toChild fromChild ->
                    task {
                        do! toChild.WriteAsync(Encoding.UTF8.GetBytes("""{"action":"shardEnded"}""" + "\n"))
                        do! toChild.FlushAsync()

                        for _ in 1..2 do
                            let! request = readLine fromChild
                            Assert.Equal("""{"action":"checkpoint","sequenceNumber":null,"subSequenceNumber":null}""", request)
                            do! toChild.WriteAsync(Encoding.UTF8.GetBytes(throttled + "\n"))
                            do! toChild.FlushAsync()
                    })

        Assert.Equal(int ExitCode.ShardEndNotCheckpointed, code)
        Assert.True(String.IsNullOrWhiteSpace rest, rest)
    }

[<Fact>]
let ``a line of 14 MB is read whole`` () =
    task {
        let payload = Array.init (10 * 1024 * 1024 + 512 * 1024) byte
        let data = Convert.ToBase64String payload

        let line =
            sprintf
                """{"action":"processRecords","records":[{"data":"%s","partitionKey":"big","sequenceNumber":"%s","approximateArrivalTimestamp":1700000000123,"subSequenceNumber":0,"action":"record"}],"millisBehindLatest":0}"""
                data
                A

        Assert.True(line.Length > 14_000_000)
        let processor, seen = scripted idle
        let logger = new CapturingLogger()

        let! code, _ =
            runInProcess (testOptions logger) processor (fun toChild fromChild ->
                task {
                    do! toChild.WriteAsync(Encoding.ASCII.GetBytes(line + "\r\n"))
                    do! toChild.FlushAsync()
                    let! status = readLine fromChild
                    Assert.Equal("""{"action":"status","responseFor":"processRecords"}""", status)
                    toChild.Dispose()
                })

        Assert.Equal(0, code)

        match records (List.ofSeq seen) with
        | [ [| record |], _ ] -> Assert.True(payload.AsSpan().SequenceEqual record.Data.Span, "the payload changed")
        | other -> failwithf "unexpected %A" (other |> List.map (fun (r, _) -> r.Length))
    }

[<Fact>]
let ``closing stdin in the middle of a batch ends the run at once with 0`` () =
    task {
        let processor =
            Processor.createTask () (fun () event ->
                task {
                    match event with
                    | Event.RecordsReceived _ -> do! Task.Delay(TimeSpan.FromMinutes 5.0)
                    | _ -> ()

                    return (), []
                })

        let logger = new CapturingLogger()

        let! code, rest =
            runInProcess (testOptions logger) processor (fun toChild _ ->
                task {
                    do! toChild.WriteAsync(Encoding.UTF8.GetBytes(batchLine + "\n"))
                    do! toChild.FlushAsync()
                    do! Task.Yield()
                    toChild.Dispose()
                })

        Assert.Equal(0, code)
        Assert.True(String.IsNullOrWhiteSpace rest, rest)
    }

(* Where callbacks run over a pipe: on the stdin thread between lines, unless one keeps it. *)

/// A handler that runs `onRecords` for processRecords and does nothing for the other actions.
type private RecordsHandler(onRecords: Checkpointer -> Task) =
    interface IActionHandler with
        member _.Handle(callback, checkpointer, _) =
            match callback with
            | Lifecycle.Callback.ProcessRecords _ -> onRecords checkpointer
            | _ -> Task.CompletedTask

let private initialize =
    """{"action":"initialize","shardId":"shardId-000000000000","sequenceNumber":"TRIM_HORIZON","subSequenceNumber":0}"""

let private checkpointLine =
    """{"action":"checkpoint","sequenceNumber":null,"subSequenceNumber":null}"""

let private checkpointReply =
    """{"action":"checkpoint","sequenceNumber":null,"subSequenceNumber":null,"error":null}"""

/// initialize, then `batches` batches that each checkpoint at their last record, then the end of stdin.
let private checkpointedBatches batches =
    [
        Daemon initialize
        Child """{"action":"status","responseFor":"initialize"}"""
        for _ in 1..batches do
            Daemon batchLine
            Child checkpointLine
            Daemon checkpointReply
            Child """{"action":"status","responseFor":"processRecords"}"""
        EndOfInput
    ]

/// Plays three checkpointed batches against `handler` over pipes, checks the run ended cleanly, and returns how many
/// times stdin was handed to another thread.
let private handOversIn (handler: IActionHandler) =
    task {
        let logger = new CapturingLogger()

        let! code, rest =
            runHandlerInProcess (testOptions logger) (fun _ -> handler) (fun toChild fromChild ->
                play (checkpointedBatches 3) toChild fromChild)

        Assert.Equal(0, code)
        Assert.True(String.IsNullOrWhiteSpace rest, rest)

        return
            logger.Entries
            |> List.filter (fun (_, message) -> message.Contains "kept the stdin thread")
            |> List.length
    }

[<Fact>]
let ``a callback that does not block starts on the thread that read its batch and goes on there after the reply`` () =
    task {
        let threads = ConcurrentQueue<string>()

        let note moment =
            threads.Enqueue(sprintf "%s on the pool: %b" moment Thread.CurrentThread.IsThreadPoolThread)

        let handler =
            RecordsHandler(fun checkpointer ->
                task {
                    note "start"
                    let! outcome = checkpointer.Checkpoint CheckpointTarget.LastDelivered
                    Assert.Equal(Ok(), outcome)
                    note "after the reply"
                })

        let! handOvers = handOversIn handler

        // A stall of the machine of over 100 ms inside the callback would hand stdin over, and it would say so; that
        // is the watchdog's business, not this test's.
        if handOvers = 0 then
            Assert.Equal<string list>(
                List.replicate 3 [ "start on the pool: false"; "after the reply on the pool: false" ] |> List.concat,
                List.ofSeq threads
            )
    }

[<Fact>]
let ``a callback that blocks on its own checkpoint still gets the reply: another thread takes over stdin`` () =
    task {
        // Sync over async, as a careless processor might write it: the thread that read the batch waits for a reply
        // that only a reader of stdin can deliver.
        let onThePool = ConcurrentQueue<bool>()

        let handler =
            RecordsHandler(fun checkpointer ->
                onThePool.Enqueue Thread.CurrentThread.IsThreadPoolThread

                match checkpointer.Checkpoint(CheckpointTarget.LastDelivered).Result with
                | Ok() -> Task.CompletedTask
                | Error failure -> Task.FromException(Kcl.CheckpointException failure))

        let! handOvers = handOversIn handler

        // A batch can reach the loop while it still finishes the action before on another thread; its callback then
        // starts on the thread pool and blocks a worker, not stdin's thread, and nothing is handed over for it. The
        // first callback that does start on stdin's thread is handed over, and every one after it starts on the pool.
        let onStdinThread = onThePool |> Seq.filter not |> Seq.length
        Assert.InRange(onStdinThread, 0, 1)
        Assert.Equal(onStdinThread, handOvers)
    }

[<Fact>]
let ``closing stdin while a callback blocks the thread that read its batch ends the run at once with 0`` () =
    task {
        use never = new ManualResetEventSlim()
        let logger = new CapturingLogger()

        let handler =
            RecordsHandler(fun _ ->
                never.Wait()
                Task.CompletedTask)

        let watch = Diagnostics.Stopwatch.StartNew()

        let! code, _ =
            runHandlerInProcess (testOptions logger) (fun _ -> handler) (fun toChild fromChild ->
                task {
                    let initialized = Child """{"action":"status","responseFor":"initialize"}"""
                    do! play [ Daemon initialize; initialized ] toChild fromChild
                    // Quiet for three of the watchdog's periods, so it has stopped and the batch must start it again.
                    do! Task.Delay 300
                    do! play [ Daemon batchLine; EndOfInput ] toChild fromChild
                })

        never.Set()
        Assert.Equal(0, code)
        // The watchdog hands stdin over within two of its 100 ms periods; the run must not wait for the callback.
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds 10.0, string watch.Elapsed)
    }

(* Garbage and hostile input, through the whole interpreter: POLICY.md's outcome, a clear error, no hang, and
   nothing but protocol lines on stdout. *)

let private initializeLine =
    """{"action":"initialize","shardId":"shardId-000000000000","sequenceNumber":"TRIM_HORIZON","subSequenceNumber":0}"""

let private hostileLine: Gen<byte[]> =
    let fixedLines =
        [
            "null"
            "[1,2]"
            "42"
            "\"processRecords\""
            "{"
            "{}"
            "{\"action\":null}"
            "{\"action\":42}"
            "{\"action\":\"processRecords\"}"
            "{\"action\":\"processRecords\",\"records\":\"nope\"}"
            "{\"action\":\"processRecords\",\"records\":[{\"data\":\"!!!\",\"sequenceNumber\":\"1\"}]}"
            "{\"action\":\"processRecords\",\"records\":[{\"data\":\"\",\"sequenceNumber\":\"x1\"}]}"
            "{\"action\":\"processRecords\",\"records\":[{\"data\":\"\"}]}"
            "{\"action\":\"processRecords\",\"records\":[{\"data\":\"\",\"sequenceNumber\":\"1\",\"subSequenceNumber\":99999999999999999999}]}"
            "{\"action\":\"processRecords\",\"records\":[{\"data\":\"\",\"sequenceNumber\":\"1\",\"subSequenceNumber\":1e30}]}"
            "{\"action\":\"processRecords\",\"records\":[],\"millisBehindLatest\":\"soon\"}"
            "{\"action\":\"initialize\"}"
            "{\"action\":\"shutdown\",\"reason\":null}"
            "{\"action\":\"shutdown\",\"reason\":\"REBALANCE\"}"
            "{\"action\":{\"nested\":[[[{\"junk\":true}]]]}}"
            String.replicate 10000 "["
            "   "
        ]
        |> List.map Encoding.UTF8.GetBytes

    let randomBytes =
        Gen.choose (0, 255)
        |> Gen.map byte
        |> Gen.filter (fun b -> b <> 10uy && b <> 13uy)
        |> Gen.arrayOf
        |> Gen.filter (fun bytes -> bytes.Length > 0)

    let truncated =
        Gen.filter
            (function
            | DaemonMessage.CheckpointReply _ -> false
            | _ -> true)
            Generators.daemonMessage
        |> Gen.map (Json.encodeDaemonMessage Json.DaemonCharset.Utf8)
        |> Gen.filter (fun line -> line.Length > 1)
        |> Gen.bind (fun line ->
            Gen.choose (1, line.Length - 1) |> Gen.map (fun cut -> line[.. cut - 1]))
        // A cut inside a string could leave a bare '\n' escape's backslash but never a raw newline; keep lines whole.
        |> Gen.filter (fun bytes -> not (Array.contains 10uy bytes))

    Gen.oneof [ Gen.elements fixedLines; randomBytes; truncated ]

[<Fact>]
let ``hostile input fails fast with a clear error, never hangs, and leaves only protocol lines on stdout`` () =
    let property (line: byte[]) =
        let logger = new CapturingLogger()

        let code, rest =
            (runInProcess (testOptions logger) (Processor.create () (fun () _ -> (), [])) (fun toChild fromChild ->
                task {
                    do! play [ Daemon initializeLine; Child """{"action":"status","responseFor":"initialize"}""" ] toChild fromChild
                    do! toChild.WriteAsync(ReadOnlyMemory(Array.append line "\n"B))
                    do! toChild.FlushAsync()
                }))
                .GetAwaiter()
                .GetResult()

        let errors =
            logger.Entries |> List.filter (fun (level, _) -> level = LogLevel.Error)

        (code = int ExitCode.UndecodableInput
         && String.IsNullOrWhiteSpace rest
         && errors |> List.exists (fun (_, message) -> message.Contains "cannot act on a line from the daemon"))
        |> Prop.label (sprintf "exit %d, stdout %A, errors %A" code rest errors)

    Check.One(
        Config.QuickThrowOnFailure.WithMaxTest 300,
        Prop.forAll (Arb.fromGen hostileLine) property
    )

[<Fact>]
let ``an unknown action from a newer daemon is answered, and the run goes on`` () =
    task {
        let logger = new CapturingLogger()

        let exchanges =
            [
                Daemon """{"action":"rebalanceRequested","deadline":5}"""
                Child """{"action":"status","responseFor":"rebalanceRequested"}"""
                Daemon initializeLine
                Child """{"action":"status","responseFor":"initialize"}"""
                EndOfInput
            ]

        let! code, rest = runInProcess (testOptions logger) (Processor.create () (fun () _ -> (), [])) (fun toChild fromChild ->
                playThenClose exchanges toChild fromChild)
        Assert.Equal(0, code)
        Assert.True(String.IsNullOrWhiteSpace rest)
        Assert.Contains(logger.Entries, fun (level, message) -> level = LogLevel.Warning && message.Contains "rebalanceRequested")
    }

/// Hands out at most `most` bytes per read, as a pipe does under load.
type private Trickle(bytes: byte[], most: int) =
    inherit IO.MemoryStream(bytes)

    override _.Read(buffer: Span<byte>) =
        base.Read(buffer.Slice(0, min most buffer.Length))

    override _.ReadAsync(buffer: Memory<byte>, cancellationToken) =
        base.ReadAsync(buffer.Slice(0, min most buffer.Length), cancellationToken)

let private readAll (reader: LineReader) =
    [
        let mutable line = reader.ReadLine()

        while line.IsSome do
            yield Encoding.ASCII.GetString(line.Value.ToArray())
            line <- reader.ReadLine()
    ]

[<Fact>]
let ``lines longer than the buffer come whole, a carriage return at a piece's edge included`` () =
    let size = 16
    // The first line ends with "\r" as the last byte of a full buffer, so its "\n" starts the next one.
    let first = String('a', size - 1) + "\r\n"
    let second = String.init (5 * size + 3) (fun i -> string (char (int 'b' + i % 20)))
    let third = String('z', 2 * size) + "\r"

    let text =
        first
        + "short\n"
        + second
        + "\n\n"
        + third
        + "\n"
        + "no newline at the end"
        + String('q', 3 * size)

    for most in [ 1; 7; size; 1000 ] do
        let lines =
            readAll (LineReader(new Trickle(Encoding.ASCII.GetBytes text, most), size))

        Assert.Equal<string list>(
            [
                String('a', size - 1)
                "short"
                second
                ""
                String('z', 2 * size)
                "no newline at the end" + String('q', 3 * size)
            ],
            lines
        )

[<Fact>]
let ``the asynchronous reads give the same lines as the blocking ones`` () =
    task {
        let text = String.Join("\r\n", [ for n in 1..50 -> String('x', n * 7) ])
        let reader = LineReader(new Trickle(Encoding.ASCII.GetBytes text, 5), 32)
        let lines = ResizeArray()
        let mutable reading = true

        while reading do
            match! reader.ReadLineAsync CancellationToken.None with
            | ValueSome line -> lines.Add(Encoding.ASCII.GetString(line.ToArray()))
            | ValueNone -> reading <- false

        Assert.Equal<string list>([ for n in 1..50 -> String('x', n * 7) ], List.ofSeq lines)
    }

[<Fact>]
let ``pieces reused from line to line never leak one line's bytes into another`` () =
    let random = Random 11

    for _ in 1..50 do
        let expected =
            [ for _ in 1 .. random.Next(1, 30) -> String.init (random.Next(0, 200)) (fun _ -> string (char (random.Next(97, 123)))) ]

        let text = String.Join("\n", expected) + "\n"
        let lines = readAll (LineReader(new Trickle(Encoding.ASCII.GetBytes text, random.Next(1, 40)), 16))
        Assert.Equal<string list>(expected, lines)
        // The same with a buffer that grows first: lines up to 64 bytes stay whole, longer ones come in 64-byte pieces.
        let lines = readAll (LineReader(new Trickle(Encoding.ASCII.GetBytes text, random.Next(1, 40)), 16, 64))
        Assert.Equal<string list>(expected, lines)

[<Fact>]
let ``the buffer grows to keep a line up to its limit in one span, and a longer one comes in pieces`` () =
    let lengths = [ 0; 5; 16; 17; 40; 63; 64; 65; 100; 200; 30; 64; 129 ]
    let expected = [ for n in lengths -> String.init n (fun i -> string (char (97 + (n + i) % 26))) ]
    let text = String.Join("\r\n", expected) + "\n"

    for most in [ 1; 7; 16; 1000 ] do
        let reader = LineReader(new Trickle(Encoding.ASCII.GetBytes text, most), 16, 64)

        let lines =
            [
                let mutable line = reader.ReadLine()

                while line.IsSome do
                    yield Encoding.ASCII.GetString(line.Value.ToArray()), line.Value.IsSingleSegment
                    line <- reader.ReadLine()
            ]

        Assert.Equal<(string * bool) list>([ for line in expected -> line, line.Length <= 64 ], lines)

/// A stream that records the room each read offered.
type private Recording(bytes: byte[], most: int) =
    inherit IO.MemoryStream(bytes)

    member val Offered = ResizeArray<int>()

    override this.Read(buffer: Span<byte>) =
        this.Offered.Add buffer.Length
        base.Read(buffer.Slice(0, min most buffer.Length))

[<Fact>]
let ``reads that fill all their room grow the buffer to its limit, and reads that do not leave it as it was`` () =
    let kib = 1024
    let line = Array.append (Array.create 1000 'x'B) "\n"B
    let text = Array.concat (Array.create 3000 line)

    // A backlog, as a writer ahead of the child leaves in a full pipe: every read is filled.
    let flooding = new Recording(text, Int32.MaxValue)
    Assert.Equal(3000, (readAll (LineReader(flooding, 64 * kib, 1024 * kib))).Length)
    Assert.Equal(64 * kib, flooding.Offered[0])
    // Once grown, a read offers all of the buffer but the start of a line left over from the last one.
    Assert.InRange(Seq.max flooding.Offered, 1024 * kib - line.Length, 1024 * kib)

    // Bytes as the daemon writes them in lock-step: each read returns less than the room it had.
    let trickling = new Recording(text, 1000)
    Assert.Equal(3000, (readAll (LineReader(trickling, 64 * kib, 1024 * kib))).Length)
    Assert.Equal(64 * kib, Seq.max trickling.Offered)

[<Fact>]
let ``a line longer than the buffer is shown as read so far after every read, and a shorter one never`` () =
    let lines = [ String('a', 5); String.init 40 (fun i -> string (char (98 + i % 20))); "xyz"; String('q', 70) ]
    let text = String.Join("\n", lines) + "\n"

    for most in [ 1; 7; 16; 100 ] do
        let shown = ResizeArray<string * bool>()
        let reader = LineReader(new Trickle(Encoding.ASCII.GetBytes text, most), 16)

        reader.Pieces <-
            { new ILinePieces with
                member _.ReadSoFar(lineSoFar, first) =
                    shown.Add(Encoding.ASCII.GetString(lineSoFar.ToArray()), first) }

        Assert.Equal<string list>(lines, readAll reader)

        // Each showing is a prefix of a long line, longer than the one before; the first of each line says so.
        let byLine = shown |> Seq.toList |> List.groupBy (fun (part, _) -> lines |> List.find (fun l -> l.StartsWith part))
        Assert.Equal<string list>([ lines[1]; lines[3] ], List.map fst byLine)

        for line, showings in byLine do
            Assert.Equal<bool list>(true :: List.replicate (showings.Length - 1) false, List.map snd showings)
            let lengths = showings |> List.map (fst >> String.length)
            Assert.Equal<int list>(List.sort lengths |> List.distinct, lengths)
            // The first after the read that follows the first full buffer, not only once a buffer is full.
            Assert.InRange(List.head lengths, 17, 16 + min most 16)

[<Fact>]
let ``a long line that trickles in is shown each time a sixteenth of the buffer's limit more has come`` () =
    let line = String.init 5000 (fun i -> string (char (97 + i % 26)))
    let shownLengths = ResizeArray<int64>()
    // The buffer grows from 16 bytes to its limit of 1024; past that the line comes in pieces, 10 bytes per read.
    let reader = LineReader(new Trickle(Encoding.ASCII.GetBytes(line + "\n"), 10), 16, 1024)

    reader.Pieces <-
        { new ILinePieces with
            member _.ReadSoFar(lineSoFar, _) = shownLengths.Add lineSoFar.Length }

    Assert.Equal<string list>([ line ], readAll reader)
    let steps = shownLengths |> Seq.pairwise |> Seq.map (fun (a, b) -> b - a) |> List.ofSeq
    Assert.NotEmpty steps
    Assert.All(steps, fun step -> Assert.InRange(step, 64L, 73L))

/// A stream that reads at most `most` bytes at a time and notes `seen ()` before each read.
type private Watched(bytes: byte[], most: int, seen: unit -> unit) =
    inherit IO.MemoryStream(bytes)

    override _.Read(buffer: Span<byte>) =
        seen ()
        base.Read(buffer.Slice(0, min most buffer.Length))

[<Fact>]
let ``a long batch's records are decoded while the rest of its line is still being read`` () =
    let batch first =
        DaemonMessage.ProcessRecords(
            Array.init 200 (fun i ->
                {
                    Data = ReadOnlyMemory(Array.create 100 (byte (first + i)))
                    PartitionKey = sprintf "key-%d" i
                    SequenceNumber = SequenceNumber.parse (string (1000 * first + i))
                    SubSequenceNumber = 0L
                    ApproximateArrivalTimestamp = None
                }),
            Some 5L
        )

    let line message =
        Array.append (Json.encodeDaemonMessage Json.DaemonCharset.Utf8 message) "\n"B

    // Two long batches, a short line between them, and a long line that is no batch.
    let notBatch = Text.Encoding.ASCII.GetBytes("{\"action\":\"leaseLost\",\"x\":\"" + String('y', 5000) + "\"}\n")
    let script = [ batch 1; DaemonMessage.LeaseLost; batch 2 ]
    let bytes = Array.concat [ yield! List.map line script; notBatch ]
    let lines = DaemonLines()
    let decodedAtEachRead = ResizeArray<int>()
    // Pieces of 1 KiB, read 300 bytes at a time.
    let reader = LineReader(new Watched(bytes, 300, fun () -> decodedAtEachRead.Add lines.DecodedSoFar), 1024)
    reader.Pieces <- lines

    let decoded =
        [
            for _ in 1..4 do
                decodedAtEachRead.Clear()
                let message = lines.Decode (reader.ReadLine()).Value
                yield message, Seq.toList decodedAtEachRead
        ]

    for (message, _), expected in List.zip (List.take 3 decoded) script do
        Assert.Equal(Ok expected, message)

    // Before the last read of each batch's line, all but its last few records were decoded, in order.
    for _, counts in [ decoded[0]; decoded[2] ] do
        Assert.Equal<int list>(List.sort counts, counts)
        Assert.InRange(List.max counts, 180, 199)

    Assert.Equal(Json.decodeDaemonMessage (ReadOnlySpan notBatch[.. notBatch.Length - 2]), fst decoded[3])
    Assert.Equal(0, List.max (snd decoded[3]))

[<Fact>]
let ``a stream of long lines reuses its pieces, and a rare long line's are let go four lines later`` () =
    let mib = 1024 * 1024
    let long = Array.append (Array.create (5 * mib) 'x'B) "\n"B
    let short = "{}\n"B
    // Long lines with short ones between, as batches with checkpoint replies; then short lines only; then a long one.
    let script = [ long; short; long; short; long; short; long; short; short; short; short; long ]
    let reader = LineReader(new IO.MemoryStream(Array.concat script), mib)

    let allocatedReading () =
        let before = GC.GetAllocatedBytesForCurrentThread()
        let line = reader.ReadLine()
        Assert.True(line.IsSome)
        GC.GetAllocatedBytesForCurrentThread() - before

    let allocated = [ for _ in script -> allocatedReading () ]

    // The first long line cuts new pieces; the next three find them all spare.
    Assert.True(allocated[0] >= int64 (4 * mib), sprintf "%A" allocated)

    for i in [ 2; 4; 6 ] do
        Assert.True(allocated[i] < int64 mib, sprintf "line %d: %A" i allocated)

    // Four short lines later only 2 MiB of pieces are left: the last long line needs new ones again.
    Assert.True(allocated[11] >= int64 (2 * mib), sprintf "%A" allocated)

// The stdin thread's watch (PipeWatch), over a real pipe: a byte written now is a quick answer, one written later a
// slow one.
let private watchedPipe (limit: TimeSpan) =
    let server = new Pipes.AnonymousPipeServerStream(Pipes.PipeDirection.Out)
    let client = new Pipes.AnonymousPipeClientStream(Pipes.PipeDirection.In, server.ClientSafePipeHandle)
    server, client, PipeWatch(int (client.SafePipeHandle.DangerousGetHandle()), limit)

/// One wait for a byte through the watch: how long the watch itself took, and the byte the read then got.
let private awaitByte (client: Stream) (watch: PipeWatch) =
    let clock = Diagnostics.Stopwatch.StartNew()
    let began = watch.BeforeRead()
    let watched = clock.Elapsed
    let got = client.ReadByte()
    watch.AfterRead began
    watched, got

let private writeLater (server: Stream) (after: TimeSpan) (value: byte) =
    Task.Run(fun () ->
        Thread.Sleep after
        server.WriteByte value
        server.Flush())

[<Fact>]
let ``stdin is watched only after four quick answers in a row, and no longer after a slow one`` () =
    if OperatingSystem.IsLinux() then
        let server, client, watch = watchedPipe (TimeSpan.FromMilliseconds 20.0)
        use _ = server
        use _ = client

        let quick () =
            server.WriteByte 7uy
            server.Flush()
            Assert.Equal(7, snd (awaitByte client watch))

        Assert.False watch.Watching

        for _ in 1..3 do
            quick ()

        Assert.False watch.Watching
        quick ()
        Assert.True watch.Watching

        let slow = writeLater server (TimeSpan.FromMilliseconds 200.0) 9uy
        Assert.Equal(9, snd (awaitByte client watch))
        slow.Wait()
        Assert.False watch.Watching

        for _ in 1..4 do
            quick ()

        Assert.True watch.Watching

[<Fact>]
let ``a watch spins to its limit when nothing comes, and the read that follows still gets the late byte`` () =
    if OperatingSystem.IsLinux() then
        let limit = TimeSpan.FromMilliseconds 30.0
        let server, client, watch = watchedPipe limit
        use _ = server
        use _ = client

        for _ in 1..4 do
            server.WriteByte 1uy
            server.Flush()
            awaitByte client watch |> ignore

        let late = writeLater server (TimeSpan.FromMilliseconds 300.0) 5uy
        let watched, got = awaitByte client watch
        late.Wait()
        Assert.True(watched >= limit, sprintf "the watch gave up after %O, before its limit" watched)
        Assert.Equal(5, got)

[<Fact>]
let ``a watch ends as soon as bytes come, and an unwatched wait does not spin`` () =
    if OperatingSystem.IsLinux() then
        let server, client, watch = watchedPipe (TimeSpan.FromSeconds 5.0)
        use _ = server
        use _ = client

        // Not yet watching: the wait goes straight to the blocking read.
        let first = writeLater server (TimeSpan.FromMilliseconds 100.0) 2uy
        let unwatched, got = awaitByte client watch
        first.Wait()
        Assert.Equal(2, got)
        Assert.True(unwatched < TimeSpan.FromMilliseconds 50.0, sprintf "an unwatched wait spun for %O" unwatched)

        for _ in 1..4 do
            server.WriteByte 1uy
            server.Flush()
            awaitByte client watch |> ignore

        Assert.True watch.Watching
        let soon = writeLater server (TimeSpan.FromMilliseconds 20.0) 3uy
        let watched, got = awaitByte client watch
        soon.Wait()
        Assert.Equal(3, got)
        Assert.True(watched < TimeSpan.FromSeconds 2.5, sprintf "the watch went on for %O after the byte came" watched)

[<Fact>]
let ``the stdin watch's limit comes from KCL_STDIN_WATCH_MICROSECONDS, 0 turning it off`` () =
    Assert.Equal("KCL_STDIN_WATCH_MICROSECONDS", PipeWatch.Variable)
    Assert.Equal(TimeSpan.FromMicroseconds 200.0, PipeWatch.LimitFrom null)
    Assert.Equal(TimeSpan.FromMicroseconds 200.0, PipeWatch.LimitFrom "")
    Assert.Equal(TimeSpan.FromMicroseconds 200.0, PipeWatch.LimitFrom "-5")
    Assert.Equal(TimeSpan.FromMicroseconds 200.0, PipeWatch.LimitFrom "fast")
    Assert.Equal(TimeSpan.Zero, PipeWatch.LimitFrom "0")
    Assert.Equal(TimeSpan.FromMicroseconds 50.0, PipeWatch.LimitFrom "50")
    // Only a process's own stdin, a file descriptor, is watched.
    Assert.Null(PipeWatch.ForStdin(new MemoryStream()))
