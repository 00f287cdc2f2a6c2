using System.Collections.Concurrent;
using System.Text;

namespace Kcl.CSharp.Tests;

/// <summary>A processor whose every callback is a delegate, recording what it was given.</summary>
internal sealed class ScriptedProcessor : IShardRecordProcessor
{
    public List<string> Calls { get; } = [];

    public InitializationInput? Initialization { get; private set; }

    public List<ProcessRecordsInput> Batches { get; } = [];

    public ConcurrentQueue<Exception> Failures { get; } = new();

    public Func<ProcessRecordsInput, CancellationToken, Task> OnBatch { get; init; } = (_, _) => Task.CompletedTask;

    public Func<ShardEndedInput, CancellationToken, Task> OnShardEnded { get; init; } =
        (input, token) => input.Checkpointer.CheckpointAsync(token);

    public Func<ShutdownRequestedInput, CancellationToken, Task> OnShutdownRequested { get; init; } =
        (_, _) => Task.CompletedTask;

    public Func<CancellationToken, Task> OnLeaseLost { get; init; } = _ => Task.CompletedTask;

    public Task InitializeAsync(InitializationInput input, CancellationToken cancellationToken)
    {
        Calls.Add("initialize");
        Initialization = input;
        return Task.CompletedTask;
    }

    public Task ProcessRecordsAsync(ProcessRecordsInput input, CancellationToken cancellationToken)
    {
        Calls.Add("processRecords");
        Batches.Add(input);
        return OnBatch(input, cancellationToken);
    }

    public Task LeaseLostAsync(LeaseLostInput input, CancellationToken cancellationToken)
    {
        Calls.Add("leaseLost");
        return OnLeaseLost(cancellationToken);
    }

    public Task ShardEndedAsync(ShardEndedInput input, CancellationToken cancellationToken)
    {
        Calls.Add("shardEnded");
        return OnShardEnded(input, cancellationToken);
    }

    public Task ShutdownRequestedAsync(ShutdownRequestedInput input, CancellationToken cancellationToken)
    {
        Calls.Add("shutdownRequested");
        return OnShutdownRequested(input, cancellationToken);
    }

    public static string Text(Record record) => Encoding.UTF8.GetString(record.Data.Span);
}
