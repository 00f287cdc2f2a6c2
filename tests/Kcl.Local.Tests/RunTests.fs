/// Run-level behaviour in process: the graceful shutdown, a source that waits for data, the JDK 17 charset.
module Kcl.Local.Tests.RunTests

open System
open System.IO
open System.IO.Pipelines
open System.Threading
open System.Threading.Tasks
open Kcl.Core
open Kcl.Local
open Xunit
open Kcl.Local.Tests.Helpers

[<Fact>]
let ``A stop request sends shutdownRequested then leaseLost to every shard, and the run is clean`` () =
    task {
        let config = config (sample "fsharp-consumer") [ "maxRecords = 10" ]

        let settings =
            { settings config (tempDir ()) 2000 2 with
                SlowBatch = TimeSpan.FromMilliseconds 20.0
            }

        use stop = new CancellationTokenSource()
        let mutable meters: ShardProgress[] = [||]

        let running =
            LocalDaemon.run settings (fun m -> meters <- m) stop.Token CancellationToken.None

        while meters.Length = 0 || meters |> Array.exists (fun m -> m.Delivered = 0) do
            do! Task.Delay 10

        stop.Cancel()
        let! outcome = running.WaitAsync(TimeSpan.FromMinutes 1.0)

        let summary =
            match outcome with
            | Ok s -> s
            | Error e -> failwith e

        Assert.True(summary.Clean, describe summary)

        for shard in summary.Shards do
            Assert.Equal(ShardEnding.LeaseLost, shard.Ending)
            let actions = shard.Session.Value.Sent |> List.map _.Action
            Assert.Equal<string list>([ "shutdownRequested"; "leaseLost" ], actions |> List.skip (actions.Length - 2))
            // The samples checkpoint at shutdown, so everything delivered is checkpointed.
            Assert.Equal(shard.Delivered, shard.Checkpointed)
            Assert.True(shard.Delivered < 1000)
    }

[<Fact>]
let ``A source waiting for data gets empty batches when asked and ends when its input closes`` () =
    task {
        let pipe = Pipe()
        let reader = new StreamReader(pipe.Reader.AsStream())

        let config =
            config
                "python3 children/misbehave.py good"
                [
                    "callProcessRecordsEvenForEmptyRecordList = true"
                    "idleTimeBetweenReadsInMillis = 200"
                ]

        let settings =
            { settings config (tempDir ()) 0 2 with
                Source = Source.Lines reader
            }

        let mutable meters: ShardProgress[] = [||]
        let running = runWith settings (fun m -> meters <- m) CancellationToken.None

        // Every shard has found the source empty (and so sent an empty batch) before the records come: a fixed wait
        // here was sometimes shorter than a python child's start on a loaded machine.
        while not running.IsCompleted
              && (meters.Length = 0 || meters |> Array.exists (fun m -> m.State <> "waiting")) do
            do! Task.Delay 10

        do! Task.Delay 300

        let lines =
            [
                for i in 1..10 -> sprintf """{"partitionKey":"k%d","text":"record %d"}""" i i
            ]

        let bytes = Text.Encoding.UTF8.GetBytes(String.Join("\n", lines) + "\n")
        let! _ = pipe.Writer.WriteAsync(ReadOnlyMemory bytes)
        do! Task.Delay 300
        do! pipe.Writer.CompleteAsync()
        let! summary = running
        Assert.True(summary.Clean, describe summary)
        Assert.Equal(10, summary.Delivered)
        Assert.Equal(10, summary.Checkpointed)

        for shard in summary.Shards do
            let batches =
                shard.Session.Value.Sent
                |> List.choose (function
                    | DaemonMessage.ProcessRecords(records, _) -> Some records.Length
                    | _ -> None)

            Assert.Contains(0, batches)
            Assert.True(batches.Length < 12, sprintf "the idle time spaces the empty batches: %A" batches)
    }

/// Runs the digests child over `records` generated records of 1 KiB in batches of `batchSize`, every `duplicateEvery`th
/// batch delivered twice if set, and checks that it saw every payload as generated, in order.
let private everyPayloadIntactWith (duplicateEvery: int option) (records: int) (batchSize: int) =
    task {
        let generator =
            { GeneratorSettings.Default with
                Records = records
                PayloadBytes = 1024
            }

        let digests = Collections.Concurrent.ConcurrentQueue<string>()

        let child = config "python3 children/misbehave.py digests" [ sprintf "maxRecords = %d" batchSize ]

        let settings =
            { settings child (tempDir ()) 0 1 with
                Source = Source.Generated generator
                ChildStderr = fun _ line -> digests.Enqueue line
                DuplicateEvery = duplicateEvery
            }

        let! summary = runToEnd settings
        Assert.True(summary.Clean, describe summary)

        let expected =
            RecordSource.generate generator
            |> Seq.map (fun record -> Convert.ToHexStringLower(Security.Cryptography.SHA256.HashData record.Data))
            |> Seq.chunkBySize batchSize
            |> Seq.indexed
            |> Seq.collect (fun (index, batch) ->
                match duplicateEvery with
                | Some every when (index + 1) % every = 0 -> Array.append batch batch
                | _ -> batch)
            |> List.ofSeq

        Assert.Equal<string list>(expected, List.ofSeq digests)
    }

let private everyPayloadIntact = everyPayloadIntactWith None

[<Fact>]
let ``Every payload arrives intact while batches' lines are spliced into the pipe and their arrays reused`` () =
    // Twelve batches of about 0.7 MB, so each array goes into the pipe four times. The child waits before it reads
    // each batch, so that an array reused too early would change what it reads.
    everyPayloadIntact 6000 500

[<Fact>]
let ``Every payload arrives intact when each batch's line is longer than the pipe`` () =
    // Six batches of about 2.3 MB: the splice waits for the child to read, and the child decodes each batch as its line
    // comes.
    everyPayloadIntact 9000 1500

[<Fact>]
let ``Every payload arrives intact when batches longer than the pipe are delivered twice between those read ahead`` () =
    // The next batch is encoded while the last is spliced, into the array freed for it; a batch delivered again is
    // encoded anew, and the one read ahead waits behind it.
    everyPayloadIntactWith (Some 2) 9000 1500

[<Fact>]
let ``The rehearsal drives a whole shard over real pipes without a finding, as a run's first shard would go`` () =
    task {
        let! result = Rehearsal.rehearse Json.DaemonCharset.Utf8
        let session = result.Session.Value

        Assert.Equal(ShardEnding.ShardEnded, result.Ending)
        Assert.Equal(Some 0, result.ExitCode)
        Assert.Empty session.Findings
        Assert.Equal<string list>([ "initialize"; "processRecords"; "processRecords"; "shardEnded" ], session.Statuses)
        Assert.Equal(4, result.Delivered)
        Assert.Equal(4, result.Checkpointed)
        Assert.True session.ShardEndCheckpointed
    }

[<Fact>]
let ``With the JDK 17 charset non-ASCII partition keys arrive as question marks`` () =
    task {
        let dir = tempDir ()
        let input = Path.Combine(dir, "records.ndjson")

        File.WriteAllLines(
            input,
            [
                """{"partitionKey":"ключ-ü","text":"x"}"""
                """{"partitionKey":"plain","data":"eA=="}"""
            ]
        )

        let run charset =
            task {
                let keys = Collections.Concurrent.ConcurrentBag<string>()

                let settings =
                    { settings (config "python3 children/misbehave.py keys" []) (tempDir ()) 0 1 with
                        Source = Source.File input
                        Charset = charset
                        ChildStderr = fun _ line -> keys.Add line
                    }

                let! summary = runToEnd settings
                Assert.True(summary.Clean, describe summary)
                return Set.ofSeq keys
            }

        let! utf8 = run Json.DaemonCharset.Utf8
        let! ascii = run Json.DaemonCharset.PosixAscii
        Assert.Equal<Set<string>>(set [ "ключ-ü"; "plain" ], utf8)
        Assert.Equal<Set<string>>(set [ "????-?"; "plain" ], ascii)
    }

[<Fact>]
let ``LATEST skips the records already in a file source and TRIM_HORIZON delivers them`` () =
    task {
        let dir = tempDir ()
        let input = Path.Combine(dir, "records.ndjson")
        File.WriteAllLines(input, [ for i in 1..5 -> sprintf """{"partitionKey":"k%d","text":"x"}""" i ])

        let run position =
            let config =
                config "python3 children/misbehave.py good" [ "initialPositionInStream = " + position ]

            runToEnd
                { settings config (tempDir ()) 0 1 with
                    Source = Source.File input
                }

        let! latest = run "LATEST"
        let! horizon = run "TRIM_HORIZON"
        Assert.True(latest.Clean && horizon.Clean)
        Assert.Equal(0, latest.Delivered)
        Assert.Equal(5, horizon.Delivered)
    }

/// The batches a shard's child was sent, in order.
let private batchesOf (shard: ShardResult) =
    shard.Session.Value.Sent
    |> List.choose (function
        | DaemonMessage.ProcessRecords(records, _) -> Some records
        | _ -> None)

[<Fact>]
let ``Batches read ahead arrive in order and full, and every checkpoint is honoured`` () =
    task {
        let config = config "python3 children/misbehave.py good" [ "maxRecords = 100" ]
        let! summary = runToEnd (settings config (tempDir ()) 2345 1)
        Assert.True(summary.Clean, describe summary)
        let shard = summary.Shards.Head
        Assert.Equal(ShardEnding.ShardEnded, shard.Ending)
        let batches = batchesOf shard
        Assert.Equal<int list>(List.replicate 23 100 @ [ 45 ], batches |> List.map _.Length)

        // The stream's own order, each record once: the shard's sequence numbers 1, 2, 3...
        Assert.Equal<string list>(
            [ for i in 1L .. 2345L -> Shards.sequenceNumber 0 i ],
            batches |> List.collect (fun b -> [ for r in b -> r.SequenceNumber.Value ])
        )

        // The child checkpoints the end of each batch, then SHARD_END: every one is taken, in order.
        let positions = shard.Session.Value.Checkpoints |> List.map _.Position

        Assert.Equal<string list>(
            (batches |> List.map (fun b -> (Array.last b).SequenceNumber.Value)) @ [ "SHARD_END" ],
            positions |> List.map _.SequenceNumber.Value
        )

        Assert.Equal(2345, shard.Checkpointed)
        Assert.Equal(0, shard.Redelivered)
    }

[<Fact>]
let ``By default a shard's session keeps only its newest history, and the run ends and counts as with the whole`` () =
    task {
        let config = config "python3 children/misbehave.py good" [ "maxRecords = 100" ]
        let whole = settings config (tempDir ()) 1000 1
        let byDefault = RunSettings.Create(whole.Config, whole.StateDir, whole.Source, whole.Shards)
        Assert.Equal(SessionHistory.Latest, byDefault.History)

        let! summary =
            runToEnd
                { whole with
                    History = byDefault.History
                }

        Assert.True(summary.Clean, describe summary)
        let shard = summary.Shards.Head
        Assert.Equal(ShardEnding.ShardEnded, shard.Ending)
        Assert.Equal(1000, shard.Delivered)
        Assert.Equal(1000, shard.Checkpointed)

        // Of the run's twelve actions, eleven checkpoints and every line of the child's, the session holds the last.
        let session = shard.Session.Value
        Assert.Equal<DaemonMessage list>([ DaemonMessage.ShardEnded ], session.Sent)
        Assert.Equal<string list>([ "shardEnded" ], session.Statuses)
        Assert.Equal<string list>([ "SHARD_END" ], session.Checkpoints |> List.map _.Position.SequenceNumber.Value)
        Assert.Equal(1, session.Lines.Length)
        Assert.True(session.ShardEndCheckpointed)
    }

[<Fact>]
let ``A shard's feed lets go of what its checkpoints pass, and every record still arrives once and in order`` () =
    task {
        let feed = ShardFeed 0

        for i in 1..2345 do
            feed.Add({ PartitionKey = "pk"; Data = [| byte i |] }, DateTimeOffset.UtcNow)

        feed.Complete()
        let mutable heldAtCheckpoints = []

        let driver =
            { DriverSettings.Create([ "python3"; "children/misbehave.py"; "good" ], AppContext.BaseDirectory, 100) with
                WaitLimit = TimeSpan.FromSeconds 20.0
                History = SessionHistory.Whole
            }

        let hooks =
            { DriverHooks.Silent with
                // Called before the release that follows the checkpoint's reply: what the feed held until then.
                Checkpointed = fun _ _ -> heldAtCheckpoints <- feed.Held :: heldAtCheckpoints
            }

        let start =
            {
                Feed = feed
                Checkpoint = ("TRIM_HORIZON", 0L)
                Position = 0
                PreviouslyDelivered = 0
            }

        let! shard =
            ShardDriver.run
                driver
                hooks
                (ShardProgress(feed.ShardId, feed.Count))
                start
                CancellationToken.None
                CancellationToken.None

        Assert.Equal(ShardEnding.ShardEnded, shard.Ending)
        Assert.Equal(2345, shard.Delivered)
        Assert.Equal(2345, shard.Checkpointed)
        Assert.Equal<string list>(
            [ for i in 1L .. 2345L -> Shards.sequenceNumber 0 i ],
            batchesOf shard |> List.collect (fun b -> [ for r in b -> r.SequenceNumber.Value ])
        )

        // A checkpoint a batch: released once the checkpoint passes half of what is held (1200 of 2345, then 600 of
        // 1145...), the rest at the last batch's, so that nothing is held at SHARD_END's.
        Assert.Equal<int list>(
            List.replicate 12 2345
            @ List.replicate 6 1145
            @ List.replicate 3 545
            @ List.replicate 2 245
            @ [ 45; 0 ],
            List.rev heldAtCheckpoints
        )
    }

[<Fact>]
let ``A duplicated batch comes before the batch read ahead, and a lost lease drops it`` () =
    task {
        let config = config "python3 children/misbehave.py good" [ "maxRecords = 100" ]

        let! duplicated =
            runToEnd
                { settings config (tempDir ()) 1000 1 with
                    DuplicateEvery = Some 2
                }

        Assert.True(duplicated.Clean, describe duplicated)
        let shard = duplicated.Shards.Head
        let firsts = batchesOf shard |> List.map (fun b -> b[0].SequenceNumber.Value)

        // Batches 2, 4, 6... twice in a row, and the next one then goes on from the stream.
        let expected =
            [
                for batch in 1..10 do
                    let first = Shards.sequenceNumber 0 (int64 ((batch - 1) * 100 + 1))
                    first
                    if batch % 2 = 0 then first
            ]

        Assert.Equal<string list>(expected, firsts)
        Assert.Equal(1500, shard.Delivered)
        Assert.Equal(500, shard.Redelivered)
        Assert.Equal(1000, shard.Checkpointed)

        let! lost =
            runToEnd
                { settings config (tempDir ()) 1000 1 with
                    LeaseLostAfter = Some 3
                }

        Assert.True(lost.Clean, describe lost)
        let shard = lost.Shards.Head
        Assert.Equal(ShardEnding.LeaseLost, shard.Ending)
        Assert.Equal(300, shard.Delivered)
        Assert.Equal(3, (batchesOf shard).Length)
    }

[<Fact>]
let ``A batch read ahead before more records arrived is read again, full`` () =
    task {
        let pipe = Pipe()
        let reader = new StreamReader(pipe.Reader.AsStream())
        let config = config "python3 children/misbehave.py slow" [ "maxRecords = 10" ]

        let settings =
            { settings config (tempDir ()) 0 1 with
                Source = Source.Lines reader
            }

        let write (range: int seq) =
            let lines = [ for i in range -> sprintf """{"partitionKey":"k","text":"record %d"}""" i ]
            pipe.Writer.WriteAsync(ReadOnlyMemory(Text.Encoding.UTF8.GetBytes(String.Join("\n", lines) + "\n")))

        let! _ = write (seq { 1..13 })
        let mutable meters: ShardProgress[] = [||]
        let running = runWith settings (fun m -> meters <- m) CancellationToken.None

        // The first batch is with the child (for 0.3 s) and the 3 records after it were read ahead; 20 more come now.
        while not running.IsCompleted
              && (meters.Length = 0 || meters |> Array.exists (fun m -> m.Delivered = 0)) do
            do! Task.Delay 5

        let! _ = write (seq { 14..33 })
        do! pipe.Writer.CompleteAsync()
        let! summary = running
        Assert.True(summary.Clean, describe summary)
        Assert.Equal<int list>([ 10; 10; 10; 3 ], batchesOf summary.Shards.Head |> List.map _.Length)
    }

[<Fact>]
let ``On Linux a child's stdin is a pipe of 1 MiB, so that a batch of 1 KiB records goes in one write`` () =
    if OperatingSystem.IsLinux() then
        // F_GETPIPE_SZ is 1032.
        match ChildProcess.start AppContext.BaseDirectory [ "python3"; "-c"; "import fcntl; print(fcntl.fcntl(0, 1032))" ] with
        | Error problem -> failwith problem
        | Ok child ->
            use child = child
            let size = child.StandardOutput.ReadToEnd().Trim()
            child.WaitForExit()
            Assert.Equal("1048576", size)

[<Fact>]
let ``No more than 16 live children get the 1 MiB pipe, so many shards cannot use up the user's pipe memory`` () =
    if OperatingSystem.IsLinux() then
        // Each child reports its stdin's size, then stays alive until its stdin closes.
        let script = "import fcntl, sys; print(fcntl.fcntl(0, 1032), flush=True); sys.stdin.read()"

        let children =
            [
                for _ in 1..17 ->
                    match ChildProcess.start AppContext.BaseDirectory [ "python3"; "-c"; script ] with
                    | Error problem -> failwith problem
                    | Ok child -> child
            ]

        try
            let sizes = children |> List.map (fun child -> child.StandardOutput.ReadLine().Trim())
            Assert.True(sizes |> List.filter ((=) "1048576") |> List.length <= 16, String.Join(", ", sizes))
            Assert.Contains("65536", sizes)
        finally
            for child in children do
                child.StandardInput.Close()
                child.WaitForExit()
                child.Dispose()
