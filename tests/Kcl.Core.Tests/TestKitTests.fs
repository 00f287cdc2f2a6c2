/// The test kit from F#: the F# sample, tested as a user would test their own pure processor.
module Kcl.Core.Tests.TestKitTests

open Kcl.Core
open Kcl.Testing
open Xunit

let private sample = Processor.create FSharpConsumer.Program.empty FSharpConsumer.Program.update

[<Fact>]
let ``the F# sample checkpoints every batch and the shard end`` () =
    task {
        let! run = sample |> ProcessorTest.run (ShardScript.Create().Texts("a", "b").Texts("c").ShardEnded())
        run.EnsureNoViolations()
        Assert.Equal<string list>([ "processRecords"; "processRecords"; "shardEnded" ], run.Checkpoints |> Seq.map _.Action |> List.ofSeq)
        Assert.True run.ShardEndCheckpointed
        Assert.Equal(System.Nullable 0, run.ExitCode)
    }

[<Fact>]
let ``the F# sample escalates a lost lease, which the library answers`` () =
    task {
        let script =
            ShardScript.Create().Texts("a").ShutdownRequested().FailCheckpointsFrom("ShutdownException", 2)

        let! run = sample |> ProcessorTest.run script
        run.EnsureNoViolations()
        Assert.True run.LeaseLost
        Assert.Equal<string list>([ "initialize"; "processRecords"; "shutdownRequested"; "leaseLost" ], List.ofSeq run.Statuses)
    }

[<Fact>]
let ``the test kit reports a processor that breaks the protocol, with the offending line`` () =
    task {
        // The library cannot write a bad line, so this child writes to the protocol stream itself.
        let rude (input: System.IO.Stream) (output: System.IO.Stream) (_: System.Threading.CancellationToken) =
            task {
                use reader = new System.IO.StreamReader(input)
                let! _ = reader.ReadLineAsync()
                do! output.WriteAsync("{\"action\":\"status\",\"responseFor\":\"initialize\",\"extra\":1}\n"B)
                do! output.FlushAsync()
                let! _ = reader.ReadToEndAsync()
                return 0
            }

        let! run =
            TestDaemon.RunAsync(
                System.Func<_, _, _, _>(rude),
                ShardScript.Create().WithTimeout(System.TimeSpan.FromMilliseconds 300.0)
            )

        // The real daemon skips the extra-keyed status and waits for ever: the kit reports both, in order.
        Assert.Equal(2, run.Violations.Count)
        Assert.Equal("{\"action\":\"status\",\"responseFor\":\"initialize\",\"extra\":1}", run.Violations[0].Line)
        Assert.Equal("initialize", run.Violations[0].Action)
        Assert.Contains("timed out", run.Violations[1].Message)
        Assert.Throws<System.InvalidOperationException>(fun () -> run.EnsureNoViolations()) |> ignore
    }
