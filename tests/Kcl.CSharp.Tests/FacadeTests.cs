using System.Text;
using Kcl.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Kcl.CSharp.Tests;

public sealed class FacadeTests
{
    private const string K = "49590338271490256608559692540925702759324208523137515618";

    private static CancellationToken Token => TestContext.Current.CancellationToken;

    private static Record Aggregated(string text, long subSequenceNumber) =>
        new(Encoding.UTF8.GetBytes(text), "agg", K, subSequenceNumber, DateTimeOffset.FromUnixTimeMilliseconds(1700000000123));

    [Fact]
    public async Task Every_lifecycle_action_reaches_the_processor_and_is_answered_once()
    {
        var processor = new ScriptedProcessor();

        var run = await TestDaemon.RunAsync(
            processor, ShardScript.Create().Texts("héllo", "wörld").EmptyBatch().ShutdownRequested());

        run.EnsureNoViolations();
        string[] expected = ["initialize", "processRecords", "processRecords", "shutdownRequested", "leaseLost"];
        Assert.Equal(expected, processor.Calls);
        Assert.Equal(expected, run.Statuses);
        Assert.Equal(0, run.ExitCode);

        Assert.Equal("shardId-000000000000", processor.Initialization!.ShardId);
        Assert.Equal("TRIM_HORIZON", processor.Initialization.SequenceNumber);
        Assert.Equal(0, processor.Initialization.SubSequenceNumber);

        var first = processor.Batches[0];
        Assert.Equal(["héllo", "wörld"], first.Records.Select(ScriptedProcessor.Text));
        Assert.Equal(["pk-1", "pk-2"], first.Records.Select(r => r.PartitionKey));
        Assert.All(first.Records, r => Assert.Equal(56, r.SequenceNumber.Length));
        Assert.Equal(DateTimeOffset.FromUnixTimeMilliseconds(1700000000123), first.Records[0].ApproximateArrivalTimestamp);
        Assert.Equal(0, first.MillisBehindLatest);
        Assert.Empty(processor.Batches[1].Records);
        Assert.Null(processor.Batches[1].MillisBehindLatest);
    }

    [Fact]
    public async Task The_base_class_checkpoints_at_SHARD_END_when_the_shard_ends()
    {
        var processor = new CountingBase();

        var run = await TestDaemon.RunAsync(processor, ShardScript.Create().Texts("a").ShardEnded());

        run.EnsureNoViolations();
        Assert.True(run.ShardEndCheckpointed);
        Assert.Equal("SHARD_END", run.Checkpoints.Single().SequenceNumber);
        Assert.Equal("shardEnded", run.Checkpoints.Single().Action);
        Assert.Equal(1, processor.Records);
    }

    [Fact]
    public async Task Each_checkpoint_form_reaches_the_daemon_with_its_position()
    {
        var processor = new ScriptedProcessor
        {
            OnBatch = async (input, token) =>
            {
                if (input.Records.Count == 3)
                {
                    await input.Checkpointer.CheckpointAsync(input.Records[1], token);
                    await input.Checkpointer.CheckpointAsync(K, 2, token);
                    return;
                }

                await input.Checkpointer.CheckpointAsync(input.Records[0].SequenceNumber, token);
                await input.Checkpointer.CheckpointAsync(token);
            },
        };

        var script = ShardScript.Create()
            .Texts("one", "two")
            .Batch(Aggregated("ab", 0), Aggregated("abc", 1), Aggregated("last", 2))
            .ShardEnded();
        var run = await TestDaemon.RunAsync(processor, script);

        run.EnsureNoViolations();
        var firstBatch = processor.Batches[0].Records;
        Assert.Equal(
            [
                (firstBatch[0].SequenceNumber, 0L),
                (firstBatch[1].SequenceNumber, 0L),
                (K, 1L),
                (K, 2L),
                ("SHARD_END", 0L),
            ],
            run.Checkpoints.Select(c => (c.SequenceNumber, c.SubSequenceNumber)));
    }

    [Fact]
    public async Task A_checkpoint_the_daemon_rejects_throws_with_its_error_and_is_not_retried()
    {
        CheckpointException? caught = null;
        var processor = new ScriptedProcessor
        {
            OnBatch = async (input, token) =>
            {
                // Beyond the last delivered record: the daemon's checkpointer answers IllegalArgumentException.
                caught = await Assert.ThrowsAsync<CheckpointException>(
                    () => input.Checkpointer.CheckpointAsync(new string('9', 60), token));
            },
        };

        var run = await TestDaemon.RunAsync(processor, ShardScript.Create().Texts("a"));

        run.EnsureNoViolations();
        Assert.NotNull(caught);
        Assert.Equal("IllegalArgumentException", caught.ErrorName);
        Assert.False(caught.IsRetryable);
        Assert.False(caught.IsLeaseLost);
        Assert.Equal(1, caught.Attempts);
        Assert.Empty(run.Checkpoints);
        Assert.Equal(["initialize", "processRecords"], run.Statuses);
    }

    [Fact]
    public async Task A_malformed_position_is_refused_before_anything_is_sent()
    {
        var processor = new ScriptedProcessor
        {
            OnBatch = async (input, token) =>
            {
                await Assert.ThrowsAsync<ArgumentException>(() => input.Checkpointer.CheckpointAsync("12a", token));
                await Assert.ThrowsAsync<ArgumentOutOfRangeException>(
                    () => input.Checkpointer.CheckpointAsync(K, -1, token));
            },
        };

        var run = await TestDaemon.RunAsync(processor, ShardScript.Create().Texts("a"));

        run.EnsureNoViolations();
        Assert.DoesNotContain(run.StdoutLines, line => line.Contains("checkpoint"));
    }

    [Fact]
    public async Task Throttling_is_retried_by_the_policy_and_the_processor_sees_one_success()
    {
        var processor = new ScriptedProcessor { OnBatch = (input, token) => input.Checkpointer.CheckpointAsync(token) };

        var run = await TestDaemon.RunAsync(
            processor, ShardScript.Create().Texts("a").FailCheckpoints("ThrottlingException", 5));

        run.EnsureNoViolations();
        Assert.Single(run.Checkpoints);
        Assert.Equal(6, run.StdoutLines.Count(line => line.Contains("\"checkpoint\"")));
    }

    [Fact]
    public async Task When_the_attempts_run_out_the_exception_says_so_and_escaping_fails_fast()
    {
        CheckpointException? caught = null;
        var processor = new ScriptedProcessor
        {
            OnBatch = async (input, token) =>
            {
                try
                {
                    await input.Checkpointer.CheckpointAsync(token);
                }
                catch (CheckpointException failure)
                {
                    caught = failure;
                    throw;
                }
            },
        };
        var options = TestDaemon.DefaultOptions.WithRetryPolicy(
            CheckpointRetryPolicy.Default.WithMaxAttempts(3).WithBackoff(TimeSpan.Zero, TimeSpan.Zero));

        var run = await TestDaemon.RunAsync(
            processor, ShardScript.Create().Texts("a").FailCheckpoints("KinesisClientLibDependencyException"), options);

        Assert.NotNull(caught);
        Assert.Equal("KinesisClientLibDependencyException", caught.ErrorName);
        Assert.True(caught.IsRetryable);
        Assert.Equal(3, caught.Attempts);
        Assert.Equal(2, run.ExitCode);
        Assert.Single(run.Violations);
        Assert.Equal(["initialize"], run.Statuses);
    }

    [Fact]
    public async Task A_checkpoint_asked_for_after_its_callback_returned_is_fixed_to_the_last_record_and_sent_later()
    {
        ICheckpointer? kept = null;
        Task? flush = null;
        var processor = new ScriptedProcessor
        {
            OnBatch = (input, _) =>
            {
                kept = input.Checkpointer;
                // A background flush: it asks once the batch callback has long returned.
                flush = Task.Run(async () =>
                {
                    await Task.Delay(200);
                    await kept.CheckpointAsync(CancellationToken.None);
                });
                return Task.CompletedTask;
            },
            OnShutdownRequested = (_, _) => flush!,
        };

        var run = await TestDaemon.RunAsync(processor, ShardScript.Create().Texts("a", "b").ShutdownRequested());

        run.EnsureNoViolations();
        var checkpoint = run.Checkpoints.Single();
        Assert.Equal(processor.Batches[0].Records[1].SequenceNumber, checkpoint.SequenceNumber);
        Assert.Equal("shutdownRequested", checkpoint.Action);
    }

    [Fact]
    public async Task A_checkpoint_asked_for_after_the_lease_is_lost_fails_as_lease_lost()
    {
        ICheckpointer? kept = null;
        CheckpointException? caught = null;
        var processor = new ScriptedProcessor
        {
            OnBatch = (input, _) =>
            {
                kept = input.Checkpointer;
                return Task.CompletedTask;
            },
            OnLeaseLost = async token =>
                caught = await Assert.ThrowsAsync<CheckpointException>(() => kept!.CheckpointAsync(token)),
        };

        var run = await TestDaemon.RunAsync(processor, ShardScript.Create().Texts("a").LeaseLost());

        run.EnsureNoViolations();
        Assert.True(caught!.IsLeaseLost);
        Assert.Equal(0, caught.Attempts);
        Assert.Empty(run.Checkpoints);
    }

    [Fact]
    public async Task A_processor_exception_fails_fast_by_default()
    {
        var processor = new ScriptedProcessor { OnBatch = (_, _) => throw new InvalidOperationException("boom") };

        var run = await TestDaemon.RunAsync(processor, ShardScript.Create().Texts("a").Texts("b"));

        Assert.Equal(2, run.ExitCode);
        Assert.Equal(["initialize"], run.Statuses);
        Assert.Single(processor.Batches);
        Assert.Contains(run.Violations, v => v.Action == "processRecords");
    }

    [Fact]
    public async Task SkipFailedBatch_answers_a_failed_batch_and_goes_on()
    {
        var processor = new ScriptedProcessor { OnBatch = (_, _) => throw new InvalidOperationException("boom") };
        var options = TestDaemon.DefaultOptions.WithExceptionPolicy(ProcessorExceptionPolicy.SkipFailedBatch);

        var run = await TestDaemon.RunAsync(processor, ShardScript.Create().Texts("a").Texts("b").ShardEnded(), options);

        run.EnsureNoViolations();
        Assert.Equal(0, run.ExitCode);
        Assert.Equal(2, processor.Batches.Count);
        Assert.True(run.ShardEndCheckpointed);
    }

    [Fact]
    public async Task A_lease_lost_failure_escaping_ShutdownRequestedAsync_is_answered()
    {
        var processor = new ScriptedProcessor
        {
            OnShutdownRequested = (input, token) => input.Checkpointer.CheckpointAsync(token),
        };

        var run = await TestDaemon.RunAsync(
            processor, ShardScript.Create().Texts("a").ShutdownRequested().FailCheckpoints("ShutdownException"));

        run.EnsureNoViolations();
        Assert.Equal(0, run.ExitCode);
        Assert.Equal(["initialize", "processRecords", "shutdownRequested", "leaseLost"], run.Statuses);
        Assert.True(run.LeaseLost);
    }

    [Fact]
    public async Task Closing_stdin_cancels_the_callback_and_ends_the_run_with_0()
    {
        var cancelled = new TaskCompletionSource();
        var processor = new ScriptedProcessor
        {
            OnBatch = async (_, token) =>
            {
                try
                {
                    await Task.Delay(Timeout.Infinite, token);
                }
                catch (OperationCanceledException)
                {
                    cancelled.SetResult();
                    throw;
                }
            },
        };

        // The daemon gives up waiting for the status, closes stdin, and the child must go at once.
        var run = await TestDaemon.RunAsync(
            processor, ShardScript.Create().Texts("a").WithTimeout(TimeSpan.FromMilliseconds(300)));

        Assert.Equal(0, run.ExitCode);
        await cancelled.Task.WaitAsync(TimeSpan.FromSeconds(10), Token);
        Assert.Single(run.Violations);
        Assert.Contains("processRecords", run.Violations[0].Action);
    }

    [Fact]
    public async Task A_legacy_processor_is_shut_down_with_TERMINATE_and_ZOMBIE()
    {
        var terminate = new LegacyProcessor();
        var run = await TestDaemon.RunAsync(terminate, ShardScript.Create().Texts("a").LegacyShutdown("TERMINATE"));
        run.EnsureNoViolations();
        Assert.Equal(ShutdownReason.Terminate, terminate.Reason);
        Assert.True(run.ShardEndCheckpointed);
        Assert.Equal(["initialize", "processRecords", "shutdown"], run.Statuses);

        var zombie = new LegacyProcessor();
        run = await TestDaemon.RunAsync(zombie, ShardScript.Create().Texts("a").LegacyShutdown("ZOMBIE"));
        run.EnsureNoViolations();
        Assert.Equal(ShutdownReason.Zombie, zombie.Reason);
        // Refused locally: nothing reached the daemon.
        Assert.Equal("InvalidStateException", zombie.Failure!.ErrorName);
        Assert.Equal(0, zombie.Failure.Attempts);
        Assert.DoesNotContain(run.StdoutLines, line => line.Contains("\"checkpoint\""));
    }

    [Fact]
    public async Task A_hosted_processor_is_resolved_from_the_services_and_logs_through_the_host()
    {
        var builder = Host.CreateApplicationBuilder();
        KclHosting.ConfigureChild(builder, claimStandardStreams: false);
        builder.Services.AddSingleton<ScriptedProcessor>();
        using var host = builder.Build();

        var run = await TestDaemon.RunAsync(
            (input, output, token) =>
                host.RunKclProcessorAsync<ScriptedProcessor>(KclOptions.Default.WithStreams(input, output), token),
            ShardScript.Create().Texts("a").ShardEnded());

        run.EnsureNoViolations();
        Assert.Equal(
            ["initialize", "processRecords", "shardEnded"], host.Services.GetRequiredService<ScriptedProcessor>().Calls);
    }

    [Fact]
    public async Task A_host_with_the_console_lifetime_is_refused()
    {
        using var host = Host.CreateApplicationBuilder().Build();

        var error = await Assert.ThrowsAsync<InvalidOperationException>(
            () => host.RunKclProcessorAsync<ScriptedProcessor>(KclOptions.Default, Token));

        Assert.Contains("UseKclChildDefaults", error.Message);
    }

    private sealed class CountingBase : ShardRecordProcessor
    {
        public int Records { get; private set; }

        public override Task ProcessRecordsAsync(ProcessRecordsInput input, CancellationToken cancellationToken)
        {
            Records += input.Records.Count;
            return Task.CompletedTask;
        }
    }

    private sealed class LegacyProcessor : IRecordProcessor
    {
        public ShutdownReason? Reason { get; private set; }

        public CheckpointException? Failure { get; private set; }

        public Task InitializeAsync(InitializationInput input, CancellationToken cancellationToken) => Task.CompletedTask;

        public Task ProcessRecordsAsync(ProcessRecordsInput input, CancellationToken cancellationToken) =>
            Task.CompletedTask;

        public async Task ShutdownAsync(ShutdownInput input, CancellationToken cancellationToken)
        {
            Reason = input.Reason;
            try
            {
                await input.Checkpointer.CheckpointAsync(cancellationToken);
            }
            catch (CheckpointException failure) when (input.Reason == ShutdownReason.Zombie)
            {
                Failure = failure;
            }
        }
    }
}
