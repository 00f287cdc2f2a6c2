namespace Kcl;

/// <summary>Asks the daemon to checkpoint. Handed to the callbacks that may checkpoint.</summary>
/// <remarks>
/// Every call completes once the daemon has answered and the library's retry policy is done. A failure always throws a
/// <see cref="CheckpointException"/>; it is never silently dropped. A call made after its callback has returned (for
/// example from a background flush) is fixed at once to the last delivered record and sent while the next action that
/// allows checkpoints is open; it fails as lease lost if none comes.
/// </remarks>
public interface ICheckpointer
{
    /// <summary>Checkpoints at the end of the batch, or at SHARD_END in <c>ShardEndedAsync</c>.</summary>
    /// <param name="cancellationToken">Stops waiting for the outcome; the request may still reach the daemon.</param>
    /// <exception cref="CheckpointException">The checkpoint failed.</exception>
    Task CheckpointAsync(CancellationToken cancellationToken);

    /// <summary>Checkpoints at a record, keeping its sub-sequence number.</summary>
    /// <param name="record">The last record the checkpoint covers.</param>
    /// <param name="cancellationToken">Stops waiting for the outcome; the request may still reach the daemon.</param>
    /// <exception cref="CheckpointException">The checkpoint failed.</exception>
    Task CheckpointAsync(Record record, CancellationToken cancellationToken);

    /// <summary>Checkpoints at a sequence number (sub-sequence 0).</summary>
    /// <param name="sequenceNumber">ASCII digits, or the sentinel SHARD_END.</param>
    /// <param name="cancellationToken">Stops waiting for the outcome; the request may still reach the daemon.</param>
    /// <exception cref="ArgumentException">The sequence number is malformed.</exception>
    /// <exception cref="CheckpointException">The checkpoint failed.</exception>
    Task CheckpointAsync(string sequenceNumber, CancellationToken cancellationToken);

    /// <summary>Checkpoints at a position inside a KPL aggregate.</summary>
    /// <param name="sequenceNumber">ASCII digits.</param>
    /// <param name="subSequenceNumber">The position inside the aggregate; never negative.</param>
    /// <param name="cancellationToken">Stops waiting for the outcome; the request may still reach the daemon.</param>
    /// <exception cref="ArgumentException">The sequence number is malformed or the sub-sequence number negative.</exception>
    /// <exception cref="CheckpointException">The checkpoint failed.</exception>
    Task CheckpointAsync(string sequenceNumber, long subSequenceNumber, CancellationToken cancellationToken);
}

/// <summary>The checkpointer of one action, over the core.</summary>
internal sealed class ActionCheckpointer(Kcl.Core.Interop.ActionCall action) : ICheckpointer
{
    public Task CheckpointAsync(CancellationToken cancellationToken) =>
        action.CheckpointAsync(null, null, cancellationToken);

    public Task CheckpointAsync(Record record, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(record);
        return action.CheckpointAsync(record.SequenceNumber, record.SubSequenceNumber, cancellationToken);
    }

    public Task CheckpointAsync(string sequenceNumber, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(sequenceNumber);
        return action.CheckpointAsync(sequenceNumber, null, cancellationToken);
    }

    public Task CheckpointAsync(string sequenceNumber, long subSequenceNumber, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(sequenceNumber);
        return action.CheckpointAsync(sequenceNumber, subSequenceNumber, cancellationToken);
    }
}
