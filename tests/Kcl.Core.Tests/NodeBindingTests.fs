(*
    The official Node binding, aws-kcl 2.3.2, run as a real child process against the daemon-side model: a client
    nobody here wrote, so a pass means the model speaks the daemon's protocol and not only our own dialect.
    tests/node-kcl-processor holds the processor; it is installed with npm into a scratch folder once per class.
*)
namespace Kcl.Core.Tests

open System
open System.Diagnostics
open System.IO
open System.Text
open System.Threading
open System.Threading.Tasks
open Kcl.Testing
open Kcl.Tests.Shared
open Xunit

/// aws-kcl 2.3.2's processor against the daemon-side model, script by script.
type NodeBindingTests(node: NodeInstall) =
    // The test kit's generated sequence numbers: these 50 digits, then the record's 1-based number in 6 digits.
    static let sequenceOf (n: int) =
        "49590338271490256608559692538361571095921575989136" + n.ToString "D6"

    static let shard = "shardId-000000000000"

    /// Plays the script against `node processor.js`, and returns the run and the processor's stderr.
    let run (script: ShardScript) =
        task {
            let stderr = StringBuilder()
            use abandon = new CancellationTokenSource()

            try
                let! result =
                    TestDaemon
                        .RunAsync(NodeChild.processor node.Folder stderr abandon.Token, script)
                        .WaitAsync(TimeSpan.FromSeconds 60.0)

                return result, lock stderr (fun () -> stderr.ToString())
            finally
                // A failed run must not leave node waiting on its stdin.
                abandon.Cancel()
        }

    let checkpointsOf (run: TestRun) =
        run.Checkpoints
        |> Seq.map (fun c -> c.Action, c.SequenceNumber, c.SubSequenceNumber)
        |> List.ofSeq

    interface IClassFixture<NodeInstall>

    [<Fact>]
    member _.``aws-kcl checkpoints each batch's last record and the shard end, in its own wire dialect``() =
        task {
            let! run, stderr = run (ShardScript.Create().Texts("a", "b").Texts("c").ShardEnded())
            run.EnsureNoViolations()
            Assert.Empty run.Warnings

            Assert.Equal<string list>(
                [ "initialize"; "processRecords"; "processRecords"; "shardEnded" ],
                List.ofSeq run.Statuses
            )

            Assert.Equal<(string * string * int64) list>(
                [
                    "processRecords", sequenceOf 2, 0L
                    "processRecords", sequenceOf 3, 0L
                    "shardEnded", "SHARD_END", 0L
                ],
                checkpointsOf run
            )

            Assert.True run.ShardEndCheckpointed
            Assert.Equal(Nullable 0, run.ExitCode)

            // Node's dialect: a checkpoint never carries subSequenceNumber (the daemon reads it as 0), and the
            // no-argument checkpoint is an explicit null. Both are within PROTOCOL.md §3.2.
            Assert.Equal<string list>(
                [
                    """{"action":"status","responseFor":"initialize"}"""
                    sprintf """{"action":"checkpoint","sequenceNumber":"%s"}""" (sequenceOf 2)
                    """{"action":"status","responseFor":"processRecords"}"""
                    sprintf """{"action":"checkpoint","sequenceNumber":"%s"}""" (sequenceOf 3)
                    """{"action":"status","responseFor":"processRecords"}"""
                    """{"action":"checkpoint","sequenceNumber":null}"""
                    """{"action":"status","responseFor":"shardEnded"}"""
                ],
                List.ofSeq run.StdoutLines
            )

            Assert.Contains(sprintf "node-kcl %s: initialized at TRIM_HORIZON/0" shard, stderr)
            Assert.Contains(sprintf "node-kcl %s: shard ended after 3 records in 2 batches" shard, stderr)
            Assert.Contains(sprintf "node-kcl %s: checkpointed at the largest permitted" shard, stderr)
        }

    [<Fact>]
    member _.``aws-kcl checkpoints at a requested shutdown, then takes the lost lease``() =
        task {
            let! run, stderr = run (ShardScript.Create().Texts("a", "b").ShutdownRequested())
            run.EnsureNoViolations()

            Assert.Equal<string list>(
                [ "initialize"; "processRecords"; "shutdownRequested"; "leaseLost" ],
                List.ofSeq run.Statuses
            )

            // The no-argument checkpoint at shutdownRequested lands on the last delivered record, already checkpointed.
            Assert.Equal<(string * string * int64) list>(
                [ "processRecords", sequenceOf 2, 0L; "shutdownRequested", sequenceOf 2, 0L ],
                checkpointsOf run
            )

            Assert.Equal<bool list>([ true; false ], run.Checkpoints |> Seq.map _.Changed |> List.ofSeq)
            Assert.False run.ShardEndCheckpointed
            Assert.Equal(Nullable 0, run.ExitCode)
            Assert.Contains(sprintf "node-kcl %s: shutdown requested after 2 records in 1 batches" shard, stderr)
            Assert.Contains(sprintf "node-kcl %s: lease lost after 2 records in 1 batches" shard, stderr)
        }

    [<Fact>]
    member _.``aws-kcl hands a throttled checkpoint's error to the callback, and the processor's retry is in protocol``
        ()
        =
        task {
            let script =
                ShardScript.Create().Texts("a").Texts("b").ShardEnded().FailCheckpoints("ThrottlingException", 1)

            let! run, stderr = run script
            run.EnsureNoViolations()

            Assert.Equal<string list>(
                [ "initialize"; "processRecords"; "processRecords"; "shardEnded" ],
                List.ofSeq run.Statuses
            )

            // The failed request is not a checkpoint; its retry, within the same action, is.
            Assert.Equal<(string * string * int64) list>(
                [
                    "processRecords", sequenceOf 1, 0L
                    "processRecords", sequenceOf 2, 0L
                    "shardEnded", "SHARD_END", 0L
                ],
                checkpointsOf run
            )

            let requests =
                run.StdoutLines |> Seq.filter _.Contains("\"checkpoint\"") |> Seq.length

            Assert.Equal(4, requests)
            Assert.Equal(Nullable 0, run.ExitCode)

            Assert.Contains(
                sprintf
                    "node-kcl %s: checkpoint at %s failed with ThrottlingException, attempt 1; retrying"
                    shard
                    (sequenceOf 1),
                stderr
            )
        }

    [<Fact>]
    member _.``non-ASCII partition keys reach the Node processor intact``() =
        task {
            let record =
                Kcl.Record(
                    ReadOnlyMemory(Encoding.UTF8.GetBytes "données"),
                    "ключ-ü-€-😀",
                    sequenceOf 7,
                    0L,
                    Nullable(DateTimeOffset.FromUnixTimeMilliseconds 1700000000123L)
                )

            let! run, stderr = run (ShardScript.Create().Batch(record).ShardEnded())
            run.EnsureNoViolations()

            Assert.Equal<(string * string * int64) list>(
                [ "processRecords", sequenceOf 7, 0L; "shardEnded", "SHARD_END", 0L ],
                checkpointsOf run
            )

            Assert.Equal(Nullable 0, run.ExitCode)
            Assert.Contains(sprintf "record %s/0 key ключ-ü-€-😀: données" (sequenceOf 7), stderr)
        }

    [<Fact>]
    member _.``aws-kcl cannot checkpoint inside a KPL aggregate: it checkpoints the sequence number at sub-sequence 0``
        ()
        =
        task {
            let part (sub: int64) =
                Kcl.Record(
                    ReadOnlyMemory(Encoding.UTF8.GetBytes(sprintf "part %d" sub)),
                    "pk",
                    sequenceOf 9,
                    sub,
                    Nullable()
                )

            let! run, stderr =
                run (ShardScript.Create().Batch(part 0L, part 1L, part 2L).ShardEnded())

            run.EnsureNoViolations()

            // Checkpointer.checkpoint(sequenceNumber, callback) has no sub-sequence argument, so the daemon stores
            // 9/0, not 9/2: a restart replays parts 1 and 2. In protocol, but at-least-once at aggregate granularity.
            Assert.Equal<(string * string * int64) list>(
                [ "processRecords", sequenceOf 9, 0L; "shardEnded", "SHARD_END", 0L ],
                checkpointsOf run
            )

            Assert.Equal(Nullable 0, run.ExitCode)
            Assert.Contains(sprintf "record %s/2 key pk: part 2" (sequenceOf 9), stderr)
        }

    [<Fact>]
    member _.``aws-kcl crashes on a pre-2.1 daemon's shutdown message, which the model reports``() =
        task {
            // A FINDING, asserted as it is: KCLManager._onAction has no case for the legacy `shutdown` (sent by KCL
            // 1.x and 2.0.x daemons), and its default branch calls this._reportError, which does not exist. Node
            // throws a TypeError and exits 1 with no status, so such a daemon would exit with code 1 (PROTOCOL.md
            // §4.5). The processor's own `shutdown` function (aws-kcl's VERSION1) is only ever fed leaseLost and
            // shardEnded: aws-kcl 2.x speaks the 2.1+ protocol only.
            let script =
                ShardScript.Create().Texts("a").LegacyShutdown("TERMINATE").WithTimeout(TimeSpan.FromSeconds 5.0)

            let! run, stderr = run script

            Assert.Equal<string list>([ "initialize"; "processRecords" ], List.ofSeq run.Statuses)
            Assert.Equal(Nullable 1, run.ExitCode)
            let violation = Assert.Single run.Violations
            Assert.Equal("shutdown", violation.Action)
            Assert.Contains("the child exited", violation.Message)
            Assert.Contains("this._reportError is not a function", stderr)

            Assert.Throws<InvalidOperationException>(fun () -> run.EnsureNoViolations())
            |> ignore
        }
