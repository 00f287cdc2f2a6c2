/// A client nobody here wrote under the local daemon: the official Node binding, aws-kcl 2.3.2, over 4 shards.
namespace Kcl.Local.Tests

open System.IO
open Kcl.Core
open Kcl.Local
open Kcl.Local.Tests.Helpers
open Kcl.Tests.Shared
open Xunit

type NodeBindingTests(node: NodeInstall) =
    interface IClassFixture<NodeInstall>

    [<Fact>]
    member _.``aws-kcl's processor gets every record, checkpoints it, and ends every shard at SHARD_END``() =
        task {
            // The daemon splits executableName on spaces; the scratch folder's path has none.
            let executable = sprintf "node %s" (Path.Combine(node.Folder, "processor.js"))
            let settings = settings (config executable [ "maxRecords = 100" ]) (tempDir ()) 2000 4
            let! summary = runToEnd settings
            Assert.True(summary.Clean, describe summary)
            Assert.Equal(2000, summary.Delivered)
            Assert.Equal(2000, summary.Checkpointed)
            Assert.Equal(4, summary.Shards.Length)

            for shard in summary.Shards do
                Assert.Equal(ShardEnding.ShardEnded, shard.Ending)
                Assert.True(shard.Session.Value.ShardEndCheckpointed, describe summary)
                Assert.Equal(Some 0, shard.ExitCode)
        }
