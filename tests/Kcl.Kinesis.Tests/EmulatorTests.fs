/// The client end to end against kinesalite on 127.0.0.1.
namespace Kcl.Kinesis.Tests

open System
open System.Text
open Xunit
open Kcl.Kinesis
open Kcl.Tests.Shared

type EmulatorTests(emulator: Kinesalite) =
    let client () =
        new KinesisClient(
            KinesisClientOptions(
                Region = "us-east-1",
                Endpoint = emulator.Endpoint,
                Credentials = AwsCredentials("AKIDLOCAL", "local"),
                MaxAttempts = 3
            )
        )

    let token = TestContext.Current.CancellationToken

    [<Fact>]
    member _.``a two-shard stream takes records and gives them back in order from TRIM_HORIZON``() =
        task {
            use kinesis = client ()
            let stream = "roundtrip"
            do! kinesis.CreateStreamAsync(stream, 2, token)
            let! summary = kinesis.WaitForActiveAsync(stream, TimeSpan.FromSeconds 10.0, token)
            Assert.Equal("ACTIVE", summary.StreamStatus)
            Assert.Equal(2, summary.OpenShardCount)

            let entries =
                [| for i in 0..99 -> { PartitionKey = sprintf "pk-%d" i; Data = Encoding.UTF8.GetBytes(sprintf "record %d" i) } |]

            let! results = kinesis.PutRecordsAsync(stream, entries, token)
            Assert.Equal(100, results.Count)
            let! shards = kinesis.ListShardsAsync(stream, token)
            Assert.Equal(2, shards.Count)
            Assert.All(shards, fun s -> Assert.False s.IsClosed)

            let received = Collections.Generic.List<string * string>()

            for shard in shards do
                let! iterator = kinesis.GetShardIteratorAsync(stream, shard.ShardId, ShardIteratorType.TrimHorizon, null, token)
                let! batch = kinesis.GetRecordsAsync(iterator, 1000, token)
                Assert.NotNull batch.NextShardIterator

                for r in batch.Records do
                    received.Add(r.PartitionKey, Encoding.UTF8.GetString r.Data)

                // in order: the sequence numbers rise within the shard
                let seqs = batch.Records |> Seq.map (fun r -> Numerics.BigInteger.Parse r.SequenceNumber) |> List.ofSeq
                Assert.Equal<Numerics.BigInteger list>(List.sort seqs, seqs)

                // the put results name this shard for exactly the records read from it
                let putHere = results |> Seq.filter (fun r -> r.ShardId = shard.ShardId) |> Seq.map (fun r -> r.SequenceNumber) |> Set.ofSeq
                Assert.Equal<Set<string>>(putHere, batch.Records |> Seq.map (fun r -> r.SequenceNumber) |> Set.ofSeq)

            Assert.Equal<Set<string * string>>(
                entries |> Seq.map (fun e -> e.PartitionKey, Encoding.UTF8.GetString e.Data) |> Set.ofSeq,
                Set.ofSeq received
            )
        }

    [<Fact>]
    member _.``a read after a sequence number starts with the record after it``() =
        task {
            use kinesis = client ()
            let stream = "after"
            do! kinesis.CreateStreamAsync(stream, 1, token)
            let! _ = kinesis.WaitForActiveAsync(stream, TimeSpan.FromSeconds 10.0, token)
            let! first = kinesis.PutRecordAsync(stream, "k", Encoding.UTF8.GetBytes "one", token)
            let! _ = kinesis.PutRecordAsync(stream, "k", Encoding.UTF8.GetBytes "two", token)
            let! iterator = kinesis.GetShardIteratorAsync(stream, first.ShardId, ShardIteratorType.AfterSequenceNumber, first.SequenceNumber, token)
            let! batch = kinesis.GetRecordsAsync(iterator, 10, token)
            Assert.Equal<string list>([ "two" ], batch.Records |> Seq.map (fun r -> Encoding.UTF8.GetString r.Data) |> List.ofSeq)
        }

    [<Fact>]
    member _.``a split closes the parent and opens two children that name it``() =
        task {
            use kinesis = client ()
            let stream = "split"
            do! kinesis.CreateStreamAsync(stream, 1, token)
            let! _ = kinesis.WaitForActiveAsync(stream, TimeSpan.FromSeconds 10.0, token)
            let! shards = kinesis.ListShardsAsync(stream, token)
            let parent = shards[0]
            let middle = Numerics.BigInteger.Parse parent.EndingHashKey / Numerics.BigInteger 2
            do! kinesis.SplitShardAsync(stream, parent.ShardId, string middle, token)
            let! _ = kinesis.WaitForActiveAsync(stream, TimeSpan.FromSeconds 10.0, token)
            let! after = kinesis.ListShardsAsync(stream, token)
            Assert.Equal(3, after.Count)
            Assert.True(after |> Seq.find (fun s -> s.ShardId = parent.ShardId) |> _.IsClosed)
            Assert.Equal(2, after |> Seq.filter (fun s -> s.ParentShardId = parent.ShardId) |> Seq.length)
        }

    [<Fact>]
    member _.``a missing stream is a ResourceNotFoundException that names the stream``() =
        task {
            use kinesis = client ()
            let! e = Assert.ThrowsAsync<KinesisException>(fun () -> kinesis.DescribeStreamSummaryAsync("no-such-stream", token) :> Threading.Tasks.Task)
            Assert.Equal("ResourceNotFoundException", e.ErrorCode)
            Assert.Contains("stream 'no-such-stream' does not exist", e.Message)
            let! e = Assert.ThrowsAsync<KinesisException>(fun () -> kinesis.PutRecordAsync("no-such-stream", "k", [| 1uy |], token) :> Threading.Tasks.Task)
            Assert.Equal("ResourceNotFoundException", e.ErrorCode)
        }

    [<Fact>]
    member _.``an endpoint nobody listens on is named in the error``() =
        task {
            let port = Kinesalite.FreePort()
            use kinesis =
                new KinesisClient(
                    KinesisClientOptions(
                        Region = "us-east-1",
                        Endpoint = Uri(sprintf "http://127.0.0.1:%d/" port),
                        Credentials = AwsCredentials("AKIDLOCAL", "local"),
                        MaxAttempts = 2,
                        BaseDelay = TimeSpan.FromMilliseconds 10.0
                    )
                )

            let! e = Assert.ThrowsAsync<KinesisException>(fun () -> kinesis.ListShardsAsync("s", token) :> Threading.Tasks.Task)
            Assert.Equal("EndpointUnreachable", e.ErrorCode)
            Assert.Contains(sprintf "127.0.0.1:%d" port, e.Message)
        }

    [<Fact>]
    member _.``an iterator that is not one is an error from the service``() =
        task {
            use kinesis = client ()
            let! e = Assert.ThrowsAsync<KinesisException>(fun () -> kinesis.GetRecordsAsync("not-an-iterator", 10, token) :> Threading.Tasks.Task)
            Assert.False(String.IsNullOrEmpty e.ErrorCode)
        }

    interface IClassFixture<Kinesalite>
