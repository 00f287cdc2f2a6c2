namespace Kcl;

/// <summary>What <see cref="IShardRecordProcessor.InitializeAsync"/> receives.</summary>
/// <param name="shardId">The shard this process serves.</param>
/// <param name="sequenceNumber">The checkpoint the shard resumes from, or null when there is none.</param>
/// <param name="subSequenceNumber">The sub-sequence number of that checkpoint, if any.</param>
public sealed class InitializationInput(string shardId, string? sequenceNumber, long? subSequenceNumber)
{
    /// <summary>The shard this process serves, e.g. "shardId-000000000000".</summary>
    public string ShardId { get; } = shardId ?? throw new ArgumentNullException(nameof(shardId));

    /// <summary>The checkpoint the shard resumes from: digits or a sentinel such as TRIM_HORIZON; null when none.</summary>
    public string? SequenceNumber { get; } = sequenceNumber;

    /// <summary>The sub-sequence number of the checkpoint the shard resumes from, if any.</summary>
    public long? SubSequenceNumber { get; } = subSequenceNumber;
}

/// <summary>What <see cref="IShardRecordProcessor.ProcessRecordsAsync"/> receives.</summary>
/// <param name="records">The batch, possibly empty.</param>
/// <param name="millisBehindLatest">How far behind the stream's tip the batch is, if the daemon said.</param>
/// <param name="checkpointer">Checkpoints for this batch.</param>
public sealed class ProcessRecordsInput(IReadOnlyList<Record> records, long? millisBehindLatest, ICheckpointer checkpointer)
{
    /// <summary>The batch, possibly empty.</summary>
    public IReadOnlyList<Record> Records { get; } = records ?? throw new ArgumentNullException(nameof(records));

    /// <summary>How far behind the stream's tip the batch is, if the daemon said.</summary>
    public long? MillisBehindLatest { get; } = millisBehindLatest;

    /// <summary>Checkpoints for this batch; with no argument, at its last record.</summary>
    public ICheckpointer Checkpointer { get; } = checkpointer ?? throw new ArgumentNullException(nameof(checkpointer));
}

/// <summary>What <see cref="IShardRecordProcessor.LeaseLostAsync"/> receives. There is no checkpointer: the lease is gone.</summary>
public sealed class LeaseLostInput
{
    /// <summary>The one instance; the input carries nothing.</summary>
    public static LeaseLostInput Instance { get; } = new();
}

/// <summary>What <see cref="IShardRecordProcessor.ShardEndedAsync"/> receives.</summary>
/// <param name="checkpointer">Checkpoints at SHARD_END when called with no position.</param>
public sealed class ShardEndedInput(ICheckpointer checkpointer)
{
    /// <summary>Checkpoints at SHARD_END when called with no position. The library does it if you do not.</summary>
    public ICheckpointer Checkpointer { get; } = checkpointer ?? throw new ArgumentNullException(nameof(checkpointer));
}

/// <summary>What <see cref="IShardRecordProcessor.ShutdownRequestedAsync"/> receives.</summary>
/// <param name="checkpointer">Takes a last checkpoint.</param>
public sealed class ShutdownRequestedInput(ICheckpointer checkpointer)
{
    /// <summary>Takes a last checkpoint; with no position, at the last delivered record.</summary>
    public ICheckpointer Checkpointer { get; } = checkpointer ?? throw new ArgumentNullException(nameof(checkpointer));
}
