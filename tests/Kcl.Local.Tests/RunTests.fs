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

        let running = runToEnd settings
        do! Task.Delay 700

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
