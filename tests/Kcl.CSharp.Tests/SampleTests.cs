using CSharpConsumer;
using Kcl.Testing;
using Microsoft.Extensions.Logging.Abstractions;

namespace Kcl.CSharp.Tests;

/// <summary>The C# sample, tested with the test kit as a user would test their own processor.</summary>
public sealed class SampleTests
{
    private static CountingProcessor NewSample() => new(NullLogger<CountingProcessor>.Instance);

    [Fact]
    public async Task The_sample_counts_every_record_and_checkpoints_every_batch_and_the_shard_end()
    {
        var sample = NewSample();

        var run = await TestDaemon.RunAsync(
            sample, ShardScript.Create().Texts("a", "b", "c").Texts("d").EmptyBatch().ShardEnded());

        run.EnsureNoViolations();
        Assert.Equal(4, sample.Records);
        Assert.Equal(["processRecords", "processRecords", "processRecords", "shardEnded"], run.Checkpoints.Select(c => c.Action));
        Assert.True(run.ShardEndCheckpointed);
        Assert.Equal(0, run.ExitCode);
    }

    [Fact]
    public async Task The_sample_leaves_throttling_to_the_library()
    {
        var run = await TestDaemon.RunAsync(
            NewSample(), ShardScript.Create().Texts("a").ShardEnded().FailCheckpoints("ThrottlingException", 2));

        run.EnsureNoViolations();
        Assert.True(run.ShardEndCheckpointed);
    }

    [Fact]
    public async Task The_sample_stops_checkpointing_when_the_lease_is_lost_and_lets_the_library_answer()
    {
        var run = await TestDaemon.RunAsync(
            NewSample(), ShardScript.Create().Texts("a").Texts("b").ShutdownRequested().FailCheckpointsFrom("ShutdownException", 2));

        run.EnsureNoViolations();
        Assert.Equal(0, run.ExitCode);
        Assert.True(run.LeaseLost);
        Assert.Single(run.Checkpoints);
        Assert.Equal("leaseLost", run.Statuses[^1]);
    }

    [Fact]
    public async Task The_sample_fails_fast_on_a_checkpoint_error_it_cannot_handle()
    {
        var run = await TestDaemon.RunAsync(
            NewSample(), ShardScript.Create().Texts("a").FailCheckpoints("InvalidStateException"));

        Assert.Equal(2, run.ExitCode);
        Assert.Equal(["initialize"], run.Statuses);
    }
}
