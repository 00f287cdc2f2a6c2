using System.Text;
using Kcl;
using Microsoft.Extensions.Logging;

namespace CSharpConsumer;

/// <summary>
/// Decodes records as UTF-8 text, counts them, and checkpoints at the end of every batch, at shard end and at shutdown.
/// Retries are the library's. A lost lease ends checkpointing for the action and lets the library answer; any other
/// checkpoint failure is left to escape, so the library's policy decides.
/// </summary>
public sealed class CountingProcessor(ILogger<CountingProcessor> logger) : IShardRecordProcessor
{
    private string shardId = "(not yet initialized)";
    private long records;
    private long characters;
    private int batches;

    /// <summary>Records seen so far.</summary>
    public long Records => records;

    /// <inheritdoc />
    public Task InitializeAsync(InitializationInput input, CancellationToken cancellationToken)
    {
        shardId = input.ShardId;
        logger.LogInformation("serving {Shard} from {Position}", shardId, input.SequenceNumber ?? "the start of the lease");
        return Task.CompletedTask;
    }

    /// <inheritdoc />
    public async Task ProcessRecordsAsync(ProcessRecordsInput input, CancellationToken cancellationToken)
    {
        foreach (var record in input.Records)
        {
            // Decoded as UTF-8 in place: a string per record would only be garbage here.
            characters += Encoding.UTF8.GetCharCount(record.Data.Span);
        }

        records += input.Records.Count;
        batches++;
        logger.LogInformation(
            "batch {Batch}: {Count} records ({Total} in all, {Characters} characters), {Behind} ms behind",
            batches, input.Records.Count, records, characters, input.MillisBehindLatest);
        await CheckpointAsync(input.Checkpointer, "the batch", cancellationToken);
    }

    /// <inheritdoc />
    public Task LeaseLostAsync(LeaseLostInput input, CancellationToken cancellationToken)
    {
        logger.LogInformation("lease on {Shard} lost after {Total} records", shardId, records);
        return Task.CompletedTask;
    }

    /// <inheritdoc />
    public Task ShardEndedAsync(ShardEndedInput input, CancellationToken cancellationToken)
    {
        logger.LogInformation("{Shard} ended after {Total} records; checkpointing at SHARD_END", shardId, records);
        return CheckpointAsync(input.Checkpointer, "SHARD_END", cancellationToken);
    }

    /// <inheritdoc />
    public Task ShutdownRequestedAsync(ShutdownRequestedInput input, CancellationToken cancellationToken)
    {
        logger.LogInformation("shutdown requested after {Total} records; checkpointing", records);
        return CheckpointAsync(input.Checkpointer, "shutdown", cancellationToken);
    }

    private async Task CheckpointAsync(ICheckpointer checkpointer, string what, CancellationToken cancellationToken)
    {
        try
        {
            await checkpointer.CheckpointAsync(cancellationToken);
        }
        catch (CheckpointException failure) when (failure.IsLeaseLost)
        {
            logger.LogInformation("the lease is gone; not checkpointing {What}", what);
        }
    }
}
