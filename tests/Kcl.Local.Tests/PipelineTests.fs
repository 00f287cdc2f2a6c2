/// The whole pipeline on one machine: the Producer sample puts records into a 2-shard stream on kinesalite, the
/// local daemon reads the stream from the endpoint, and the C# sample consumes it.
namespace Kcl.Local.Tests

open System
open System.Diagnostics
open System.IO
open System.Threading
open System.Threading.Tasks
open Kcl.Kinesis
open Kcl.Local
open Kcl.Tests.Shared
open Xunit
open Kcl.Local.Tests.Helpers

/// The pipeline runs npm, node, the producer and the daemon's children: alone, so that the timing-sensitive tests
/// of the other classes do not share the machine with it.
[<CollectionDefinition("Kinesis pipeline", DisableParallelization = true)>]
type PipelineCollection() =
    class
    end

[<Collection("Kinesis pipeline")>]
type PipelineTests(emulator: Kinesalite) =
    let token = TestContext.Current.CancellationToken

    let client () =
        new KinesisClient(
            KinesisClientOptions(Region = "us-east-1", Endpoint = emulator.Endpoint, Credentials = AwsCredentials("AKIDLOCAL", "local"))
        )


    /// Runs the published producer against the emulator, with a dummy key pair in its environment.
    let produce (stream: string) (records: int) =
        task {
            let exe = Path.Combine(repositoryRoot, "artifacts", "samples", "producer", "producer")

            if not (File.Exists exe) then
                failwithf "%s does not exist; run `dotnet fsi build.fsx samples` first" exe

            let info =
                ProcessStartInfo(
                    exe,
                    [ "--endpoint"; string emulator.Endpoint; "--stream"; stream; "--records"; string records; "--shards"; "2"; "--region"; "us-east-1" ],
                    UseShellExecute = false,
                    RedirectStandardOutput = true,
                    RedirectStandardError = true
                )

            info.Environment["AWS_ACCESS_KEY_ID"] <- "AKIDLOCAL"
            info.Environment["AWS_SECRET_ACCESS_KEY"] <- "local"
            use p = Process.Start info
            let out = p.StandardOutput.ReadToEndAsync()
            let err = p.StandardError.ReadToEndAsync()
            do! p.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds 60.0)
            let! out = out
            let! err = err
            Assert.True(p.ExitCode = 0, sprintf "producer exited with %d:\n%s\n%s" p.ExitCode out err)
            return out
        }

    /// Runs the local daemon over the emulator's stream until `records` records were delivered, then stops it.
    let consume (stream: string) (records: int) (stateDir: string) (applicationName: string) =
        task {
            let config =
                { config (sample "csharp-consumer") [ "maxRecords = 50"; "idleTimeBetweenReadsInMillis = 200" ] with
                    StreamName = stream
                    ApplicationName = applicationName
                }

            let settings =
                { RunSettings.Create(config, stateDir, Source.Kinesis(emulator.Endpoint, "us-east-1", stream), 1) with
                    WorkingDirectory = repositoryRoot
                    DefaultWaitLimit = TimeSpan.FromSeconds 20.0
                    ExitLimit = TimeSpan.FromSeconds 5.0
                }

            use stop = new CancellationTokenSource()
            let mutable meters: ShardProgress[] = [||]
            let run = LocalDaemon.run settings (fun m -> meters <- m) stop.Token CancellationToken.None
            let deadline = Stopwatch.StartNew()

            while not run.IsCompleted
                  && (meters.Length = 0 || (meters |> Array.sumBy _.Delivered) < records)
                  && deadline.Elapsed < TimeSpan.FromSeconds 40.0 do
                do! Task.Delay 50

            // A little longer: anything delivered twice would show up now.
            do! Task.Delay 500
            stop.Cancel()
            let! outcome = run.WaitAsync(TimeSpan.FromSeconds 30.0)

            match outcome with
            | Ok summary -> return summary
            | Error problem -> return failwithf "the run could not start: %s" problem
        }

    [<Fact>]
    member _.``every record the producer puts is consumed exactly once through the local daemon``() =
        task {
            let records = 400
            let! printed = produce "pipeline" records
            Assert.Contains(sprintf "done: %d records" records, printed)
            Assert.Contains("shardId-000000000001", printed)

            let! summary = consume "pipeline" records (tempDir ()) ("pipeline-" + Guid.NewGuid().ToString "N")
            Assert.True(summary.Clean, describe summary)
            Assert.Equal(2, summary.Shards.Length)
            Assert.Equal(records, summary.Delivered)
            Assert.Equal(0, summary.Redelivered)
            Assert.All(summary.Shards, fun s -> Assert.True(s.Delivered > 0, describe summary))
            Assert.Equal(records, summary.Checkpointed)
        }

    [<Fact>]
    member _.``a second run resumes after the checkpoints and delivers only the records put since``() =
        task {
            let stateDir = tempDir ()
            let app = "resume-" + Guid.NewGuid().ToString "N"
            let! _ = produce "resume" 100
            let! first = consume "resume" 100 stateDir app
            Assert.Equal(100, first.Delivered)
            let! _ = produce "resume" 60
            let! second = consume "resume" 60 stateDir app
            Assert.True(second.Clean, describe second)
            Assert.Equal(60, second.Delivered)
            Assert.Equal(0, second.Redelivered)
        }

    [<Fact>]
    member _.``a missing stream is an error before any child starts``() =
        task {
            let config = config (sample "csharp-consumer") []

            let settings =
                RunSettings.Create(config, tempDir (), Source.Kinesis(emulator.Endpoint, "us-east-1", "no-such-stream"), 1)

            let! outcome = LocalDaemon.run settings ignore CancellationToken.None CancellationToken.None
            match outcome with
            | Ok _ -> failwith "expected an error"
            | Error problem -> Assert.Contains("stream 'no-such-stream' does not exist", problem)
        }

    [<Fact>]
    member _.``KPL-aggregated records are delivered as their sub-records, and a checkpoint inside one resumes after it``() =
        task {
            use kinesis = client ()
            let stream = "aggregated"
            do! kinesis.CreateStreamAsync(stream, 1, token)
            let! _ = kinesis.WaitForActiveAsync(stream, TimeSpan.FromSeconds 10.0, token)
            let subRecords = [ for i in 0..4 -> sprintf "sub-%d" i, Text.Encoding.UTF8.GetBytes(sprintf "payload %d" i) ]
            let! first = kinesis.PutRecordAsync(stream, "agg-1", Aggregation.encode subRecords, token)
            let! _ = kinesis.PutRecordAsync(stream, "plain", "plain"B, token)
            let! _ = kinesis.PutRecordAsync(stream, "agg-2", Aggregation.encode subRecords, token)

            let! all = consume stream 11 (tempDir ()) ("agg-" + Guid.NewGuid().ToString "N")
            Assert.True(all.Clean, describe all)
            Assert.Equal(11, all.Delivered)

            // A stored checkpoint at the third sub-record of the first aggregate: the rest of it and what follows.
            let stateDir = tempDir ()
            let app = "agg-resume-" + Guid.NewGuid().ToString "N"

            LeaseFile.save
                (LeaseFile.path stateDir app)
                app
                [
                    {
                        ShardId = first.ShardId
                        Checkpoint = first.SequenceNumber
                        SubSequenceNumber = 2L
                        HighestDelivered = None
                    }
                ]

            let! resumed = consume stream 8 stateDir app
            Assert.True(resumed.Clean, describe resumed)
            Assert.Equal(2 + 1 + 5, resumed.Delivered)
        }

    [<Fact>]
    member _.``a shard split in the middle of the stream is read to SHARD_END before its children``() =
        task {
            use kinesis = client ()
            let stream = "resharded"
            do! kinesis.CreateStreamAsync(stream, 1, token)
            let! _ = kinesis.WaitForActiveAsync(stream, TimeSpan.FromSeconds 10.0, token)
            let put range = kinesis.PutRecordsAsync(stream, [| for i in range -> { PartitionKey = sprintf "pk-%d" i; Data = Text.Encoding.UTF8.GetBytes(sprintf "r%d" i) } |], token)
            let! _ = put [ 0..49 ]
            let! shards = kinesis.ListShardsAsync(stream, token)
            let parent = shards[0]
            do! kinesis.SplitShardAsync(stream, parent.ShardId, string (Numerics.BigInteger.Parse parent.EndingHashKey / Numerics.BigInteger 2), token)
            let! _ = kinesis.WaitForActiveAsync(stream, TimeSpan.FromSeconds 10.0, token)
            let! _ = put [ 50..99 ]

            let! summary = consume stream 100 (tempDir ()) ("split-" + Guid.NewGuid().ToString "N")
            Assert.True(summary.Clean, describe summary)
            Assert.Equal(3, summary.Shards.Length)
            Assert.Equal(100, summary.Delivered)
            Assert.Equal(0, summary.Redelivered)
            let parentResult = summary.Shards |> List.find (fun s -> s.ShardId = parent.ShardId)
            Assert.Equal(50, parentResult.Delivered)
            Assert.Equal(ShardEnding.ShardEnded, parentResult.Ending)
        }

    interface IClassFixture<Kinesalite>
