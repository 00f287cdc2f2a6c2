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

type PipelineTests(emulator: Kinesalite) =
    let token = TestContext.Current.CancellationToken

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

    interface IClassFixture<Kinesalite>
