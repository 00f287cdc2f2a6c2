/// Processors that break the protocol on purpose (children/misbehave.py): each violation is reported with the
/// right message, and no run hangs.
module Kcl.Local.Tests.MisbehaviourTests

open System
open Kcl.Core
open Kcl.Local
open Xunit
open Kcl.Local.Tests.Helpers

let private runMode (mode: string) (extra: string list) =
    let config = config ("python3 children/misbehave.py " + mode) extra

    runToEnd
        { settings config (tempDir ()) 20 1 with
            ExitLimit = TimeSpan.FromSeconds 1.0
        }

let private single (summary: Summary) =
    Assert.False(summary.Clean, describe summary)
    Assert.Equal(1, summary.Violations.Length)
    summary.Violations.Head

[<Fact>]
let ``A correct python processor passes, so any executable can be driven`` () =
    task {
        let! summary = runMode "good" []
        Assert.True(summary.Clean, describe summary)
        Assert.Equal(20, summary.Checkpointed)
    }

[<Fact>]
let ``A non-JSON line is reported as one the daemon skips while it waits for the status`` () =
    task {
        let! summary = runMode "garbage" []
        let finding = single summary
        Assert.Equal(Some "this is not JSON", finding.Line)
        Assert.Equal(Some "processRecords", finding.Action)
        Assert.Contains("the daemon cannot parse this line", finding.Message)
    }

[<Fact>]
let ``A status with an extra key is reported as unparseable by the daemon`` () =
    task {
        let! summary = runMode "extra-key" []
        let finding = single summary
        Assert.Contains("\"extra\"", finding.Line.Value)
        Assert.Contains("the daemon cannot parse this line", finding.Message)
    }

[<Fact>]
let ``A wrong responseFor is reported as fatal and the run stops`` () =
    task {
        let! summary = runMode "wrong-response" []
        let finding = single summary
        Assert.Contains("wrong responseFor: processRecords was answered with \"initialize\"", finding.Message)
        Assert.Contains(summary.Failures, fun (_, reason) -> reason.Contains "would have exited")
    }

[<Fact>]
let ``A checkpoint during initialize is reported as one where none is allowed`` () =
    task {
        let! summary = runMode "checkpoint-init" []
        let finding = single summary
        Assert.Equal(Some "initialize", finding.Action)
        Assert.Contains("a checkpoint where none is allowed", finding.Message)
    }

[<Fact>]
let ``Two statuses for one action are reported`` () =
    task {
        let! summary = runMode "two-statuses" []
        Assert.Contains(summary.Violations, fun f -> f.Message.Contains "two statuses for one action (initialize)")
    }

[<Fact>]
let ``shardEnded answered without a SHARD_END checkpoint is reported`` () =
    task {
        let! summary = runMode "no-shard-end" []
        let finding = single summary
        Assert.Equal(Some "shardEnded", finding.Action)
        Assert.Contains("missing SHARD_END checkpoint", finding.Message)
    }

[<Fact>]
let ``A child that does not exit on stdin EOF is reported and killed within the bound`` () =
    task {
        let clock = Diagnostics.Stopwatch.StartNew()
        let! summary = runMode "no-exit" []
        let finding = single summary
        Assert.Contains("the child did not exit after stdin EOF", finding.Message)
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds 15.0)
    }

[<Fact>]
let ``A child that never answers times out after timeoutInSeconds`` () =
    task {
        let clock = Diagnostics.Stopwatch.StartNew()
        // Long enough for python to start on a busy machine: initialize is bounded too.
        let! summary = runMode "timeout" [ "timeoutInSeconds = 3" ]
        let finding = single summary
        Assert.Equal(Some "processRecords", finding.Action)
        Assert.Contains("timed out waiting for a message during processRecords", finding.Message)
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds 15.0)
    }

[<Fact>]
let ``A program that cannot be found fails the shard without hanging`` () =
    task {
        let! summary = runMode "good" []
        Assert.True(summary.Clean)
        let config = config "no/such/program" []
        let! missing = runToEnd (settings config (tempDir ()) 5 2)
        Assert.False(missing.Clean)
        Assert.All(missing.Failures, fun (_, reason) -> Assert.Contains("Failed to start client executable", reason))
    }
