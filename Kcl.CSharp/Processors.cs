namespace Kcl;

/// <summary>A record processor for one shard: one method per lifecycle action.</summary>
/// <remarks>
/// One instance serves one shard for the life of the process. Each method's task must complete when the processor is
/// done with the action; the library then answers the daemon. An exception that escapes follows POLICY.md: by default
/// the process exits without answering, so the work comes again after a restart (see <see cref="ProcessorExceptionPolicy"/>).
/// </remarks>
public interface IShardRecordProcessor
{
    /// <summary>The shard this process serves, and where it resumes. No checkpoints are allowed here.</summary>
    Task InitializeAsync(InitializationInput input, CancellationToken cancellationToken);

    /// <summary>A batch of records.</summary>
    Task ProcessRecordsAsync(ProcessRecordsInput input, CancellationToken cancellationToken);

    /// <summary>Another worker holds the lease now; checkpointing is impossible.</summary>
    Task LeaseLostAsync(LeaseLostInput input, CancellationToken cancellationToken);

    /// <summary>The shard has ended: checkpoint at SHARD_END (the library does it if you do not).</summary>
    Task ShardEndedAsync(ShardEndedInput input, CancellationToken cancellationToken);

    /// <summary>The worker is shutting down or handing the lease off; a last checkpoint may be taken.</summary>
    Task ShutdownRequestedAsync(ShutdownRequestedInput input, CancellationToken cancellationToken);
}

/// <summary>A convenient base: only <see cref="ProcessRecordsAsync"/> is required.</summary>
public abstract class ShardRecordProcessor : IShardRecordProcessor
{
    /// <summary>Does nothing.</summary>
    public virtual Task InitializeAsync(InitializationInput input, CancellationToken cancellationToken) =>
        Task.CompletedTask;

    /// <inheritdoc />
    public abstract Task ProcessRecordsAsync(ProcessRecordsInput input, CancellationToken cancellationToken);

    /// <summary>Does nothing.</summary>
    public virtual Task LeaseLostAsync(LeaseLostInput input, CancellationToken cancellationToken) =>
        Task.CompletedTask;

    /// <summary>Checkpoints at SHARD_END.</summary>
    public virtual Task ShardEndedAsync(ShardEndedInput input, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(input);
        return input.Checkpointer.CheckpointAsync(cancellationToken);
    }

    /// <summary>Does nothing.</summary>
    public virtual Task ShutdownRequestedAsync(ShutdownRequestedInput input, CancellationToken cancellationToken) =>
        Task.CompletedTask;
}

/// <summary>Why a legacy processor is shut down.</summary>
public enum ShutdownReason
{
    /// <summary>The shard has ended; checkpoint (at SHARD_END) before returning.</summary>
    Terminate,

    /// <summary>The lease was lost; do not checkpoint.</summary>
    Zombie,
}

/// <summary>What <see cref="IRecordProcessor.ShutdownAsync"/> receives.</summary>
/// <param name="reason">Why the processor is shut down.</param>
/// <param name="checkpointer">Checkpoints at SHARD_END for <see cref="ShutdownReason.Terminate"/>; fails locally for
/// <see cref="ShutdownReason.Zombie"/>.</param>
public sealed class ShutdownInput(ShutdownReason reason, ICheckpointer checkpointer)
{
    /// <summary>Why the processor is shut down.</summary>
    public ShutdownReason Reason { get; } = reason;

    /// <summary>Checkpoints at SHARD_END for <see cref="ShutdownReason.Terminate"/>; fails locally otherwise.</summary>
    public ICheckpointer Checkpointer { get; } = checkpointer ?? throw new ArgumentNullException(nameof(checkpointer));
}

/// <summary>The KCL 1.x processor shape, for code written against the older bindings.</summary>
/// <remarks>
/// <c>leaseLost</c> and legacy <c>ZOMBIE</c>/<c>LEASE_LOST</c> shutdowns arrive as <see cref="ShutdownReason.Zombie"/>;
/// <c>shardEnded</c> and legacy <c>TERMINATE</c>/<c>SHARD_END</c> as <see cref="ShutdownReason.Terminate"/>;
/// <c>shutdownRequested</c> is answered without a call.
/// </remarks>
public interface IRecordProcessor
{
    /// <summary>The shard this process serves, and where it resumes.</summary>
    Task InitializeAsync(InitializationInput input, CancellationToken cancellationToken);

    /// <summary>A batch of records.</summary>
    Task ProcessRecordsAsync(ProcessRecordsInput input, CancellationToken cancellationToken);

    /// <summary>The processor is shut down, for the given reason.</summary>
    Task ShutdownAsync(ShutdownInput input, CancellationToken cancellationToken);
}
