/// Both published samples under the local daemon: complete runs, a kill and restart, injected checkpoint errors.
module Kcl.Local.Tests.SampleTests

open System
open System.Threading
open System.Threading.Tasks
open Kcl.Core
open Kcl.Local
open Xunit
open Kcl.Local.Tests.Helpers

let samples = [ "csharp-consumer"; "fsharp-consumer" ]

let private sampleSettings name records extra =
    let config = config (sample name) ("maxRecords = 100" :: extra)
    settings config (tempDir ()) records 4

let private shardTotals (summary: Summary) =
    summary.Shards |> List.map (fun s -> s.Delivered)

[<Fact>]
let ``Both samples get every record delivered and checkpointed, and SHARD_END on every shard`` () =
    task {
        for name in samples do
            let! summary = runToEnd (sampleSettings name 1200 [])
            Assert.True(summary.Clean, describe summary)
            Assert.Equal(1200, summary.Delivered)
            Assert.Equal(1200, summary.Checkpointed)
            Assert.Equal(0, summary.Redelivered)
            Assert.Equal(4, summary.Shards.Length)

            for shard in summary.Shards do
                let session = shard.Session.Value
                Assert.Equal(ShardEnding.ShardEnded, shard.Ending)
                Assert.True(session.ShardEndCheckpointed, describe summary)
                Assert.Equal(Some 0, shard.ExitCode)
                Assert.True(shard.Delivered > 0, "every shard gets records")
    }

[<Fact>]
let ``A kill in the middle of a stream loses nothing and a restart redelivers only records after the last checkpoint``
    ()
    =
    task {
        for name in samples do
            let first =
                { sampleSettings name 2000 [] with
                    SlowBatch = TimeSpan.FromMilliseconds 50.0
                }

            use kill = new CancellationTokenSource()
            let mutable meters: ShardProgress[] = [||]

            let watcher =
                task {
                    while meters.Length = 0 || (meters |> Array.sumBy _.Delivered) < 300 do
                        do! Task.Delay 10

                    kill.Cancel()
                }

            let! killed = runWith first (fun m -> meters <- m) kill.Token
            do! watcher.WaitAsync(TimeSpan.FromSeconds 5.0)
            Assert.True(killed.Delivered < 2000, describe killed)
            // On a busy machine a shard may finish before the kill; at least one must be cut mid-stream.
            Assert.Contains(killed.Shards, fun s -> s.Ending = ShardEnding.Failed "killed")
            Assert.True(killed.Violations.IsEmpty, describe killed)

            let leaseFile = LeaseFile.path first.StateDir first.Config.ApplicationName

            let stored =
                match LeaseFile.load leaseFile with
                | Ok entries -> entries |> List.map (fun e -> e.ShardId, e) |> Map.ofList
                | Error e -> failwith e

            let! restarted = runToEnd { first with SlowBatch = TimeSpan.Zero }
            Assert.True(restarted.Clean, describe restarted)

            // The same generator and seed give the same shards, so the first run's feeds stand for the stream.
            let feeds = Array.init 4 ShardFeed

            for record in
                RecordSource.generate
                    { GeneratorSettings.Default with
                        Records = 2000
                    } do
                feeds[Shards.shardOf 4 record.PartitionKey].Add(record, DateTimeOffset.UtcNow)

            for shard in restarted.Shards do
                let feed = feeds |> Array.find (fun f -> f.ShardId = shard.ShardId)
                let entry = stored[shard.ShardId]

                match entry.Checkpoint with
                | "SHARD_END" -> Assert.Equal(ShardEnding.AlreadyEnded, shard.Ending)
                | checkpoint ->
                    let resumeAt =
                        if checkpoint = "TRIM_HORIZON" then
                            0
                        else
                            feed.PositionAfter checkpoint

                    let highest =
                        entry.HighestDelivered |> Option.map feed.PositionAfter |> Option.defaultValue 0
                    // Nothing lost: what the restart delivered starts right after the checkpoint and reaches the end.
                    Assert.Equal(feed.Count - resumeAt, shard.Delivered)
                    Assert.Equal(feed.Count - resumeAt, shard.Checkpointed)
                    // Only records the killed run delivered after its last checkpoint come again.
                    Assert.Equal(highest - resumeAt, shard.Redelivered)
                    Assert.True(shard.Redelivered <= 100, "at most the batch in flight comes again")
                    Assert.True(shard.Session.Value.ShardEndCheckpointed)

            Assert.True(restarted.Redelivered > 0 || killed.Checkpointed = killed.Delivered, describe restarted)

            // A third run finds every shard at SHARD_END and starts no child.
            let! third = runToEnd first
            Assert.All(third.Shards, fun s -> Assert.Equal(ShardEnding.AlreadyEnded, s.Ending))
    }

[<Fact>]
let ``The samples survive ThrottlingException retries`` () =
    task {
        for name in samples do
            let settings =
                { sampleSettings name 800 [] with
                    Faults =
                        [
                            FaultRule.Times(CheckpointError.Throttling, 1, 2)
                            FaultRule.Times(CheckpointError.Throttling, 5, 1)
                        ]
                }

            let! summary = runToEnd settings
            Assert.True(summary.Clean, describe summary)
            Assert.Equal(800, summary.Checkpointed)

            for shard in summary.Shards do
                let session = shard.Session.Value
                Assert.True(session.ShardEndCheckpointed)
                // Each failed request was retried: three failures, each followed by another request.
                Assert.Equal(session.Checkpoints.Length + 3, session.CheckpointRequests)
    }

[<Fact>]
let ``The samples stop retrying on ShutdownException and the daemon sends leaseLost`` () =
    task {
        for name in samples do
            let settings =
                { sampleSettings name 800 [] with
                    Faults = [ FaultRule.Always(CheckpointError.Shutdown, 2) ]
                }

            let! summary = runToEnd settings
            Assert.True(summary.Clean, describe summary)

            for shard in summary.Shards do
                let session = shard.Session.Value
                Assert.Equal(ShardEnding.LeaseLost, shard.Ending)
                Assert.True(session.LeaseLost)
                // One successful checkpoint, one ShutdownException, no retry after it.
                Assert.Equal(2, session.CheckpointRequests)
                Assert.Equal(1, session.Checkpoints.Length)
                Assert.Equal(100, shard.Checkpointed)
                Assert.Equal(Some 0, shard.ExitCode)
    }

[<Fact>]
let ``Duplicate batches are counted as redelivered and a lease lost mid-stream ends the shard cleanly`` () =
    task {
        let! duplicated =
            runToEnd
                { sampleSettings "fsharp-consumer" 800 [] with
                    DuplicateEvery = Some 1
                }

        Assert.True(duplicated.Clean, describe duplicated)
        Assert.Equal(1600, duplicated.Delivered)
        Assert.Equal(800, duplicated.Redelivered)
        Assert.Equal(800, duplicated.Checkpointed)

        let! lost =
            runToEnd
                { sampleSettings "csharp-consumer" 800 [] with
                    LeaseLostAfter = Some 1
                }

        Assert.True(lost.Clean, describe lost)
        Assert.All(lost.Shards, fun s -> Assert.Equal(ShardEnding.LeaseLost, s.Ending))
        Assert.Equal(400, lost.Delivered)
    }
