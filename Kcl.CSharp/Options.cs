using Microsoft.Extensions.Logging;

namespace Kcl;

/// <summary>What happens when a processor callback throws (POLICY.md, "Processor exceptions").</summary>
public enum ProcessorExceptionPolicy
{
    /// <summary>Log the exception and exit non-zero without answering, so the batch comes again after the restart.</summary>
    FailFast,

    /// <summary>
    /// Log the exception, answer and go on. A later checkpoint covers the failed batch, so its records are
    /// <b>not</b> processed again.
    /// </summary>
    SkipFailedBatch,
}

/// <summary>How failed checkpoints are retried: the only place retries happen. Immutable.</summary>
/// <remarks>
/// Keep the total wait well below the daemon's <c>timeoutInSeconds</c> when that is set: the daemon halts the whole JVM
/// when it expires.
/// </remarks>
public sealed class CheckpointRetryPolicy
{
    private CheckpointRetryPolicy(
        int maxAttempts, TimeSpan initialBackoff, TimeSpan maxBackoff, bool jitter, IReadOnlyCollection<string> retryableErrors)
    {
        MaxAttempts = maxAttempts;
        InitialBackoff = initialBackoff;
        MaxBackoff = maxBackoff;
        Jitter = jitter;
        RetryableErrors = retryableErrors;
    }

    /// <summary>
    /// POLICY.md's default: ThrottlingException and KinesisClientLibDependencyException, 6 attempts, backoff from 200 ms
    /// doubling to at most 3.2 s, with full jitter; at most 6.2 s of waiting in all.
    /// </summary>
    public static CheckpointRetryPolicy Default { get; } = new(
        6,
        TimeSpan.FromMilliseconds(200),
        TimeSpan.FromMilliseconds(3200),
        true,
        ["ThrottlingException", "KinesisClientLibDependencyException"]);

    /// <summary>A policy that makes one attempt and never retries.</summary>
    public static CheckpointRetryPolicy NoRetries { get; } = Default.WithMaxAttempts(1);

    /// <summary>Attempts in all, the first one included.</summary>
    public int MaxAttempts { get; }

    /// <summary>The backoff limit after the first failed attempt; it doubles after each further one.</summary>
    public TimeSpan InitialBackoff { get; }

    /// <summary>The largest backoff limit.</summary>
    public TimeSpan MaxBackoff { get; }

    /// <summary>Whether each wait is a random time up to the limit (full jitter) rather than the limit itself.</summary>
    public bool Jitter { get; }

    /// <summary>The daemon error names (Java exception simple names) worth another attempt.</summary>
    public IReadOnlyCollection<string> RetryableErrors { get; }

    /// <summary>A copy with this many attempts in all.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Fewer than one attempt.</exception>
    public CheckpointRetryPolicy WithMaxAttempts(int maxAttempts)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxAttempts, 1);
        return new(maxAttempts, InitialBackoff, MaxBackoff, Jitter, RetryableErrors);
    }

    /// <summary>A copy with these backoff limits.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A negative limit, or an initial limit above the largest.</exception>
    public CheckpointRetryPolicy WithBackoff(TimeSpan initialBackoff, TimeSpan maxBackoff)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(initialBackoff, TimeSpan.Zero);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBackoff, initialBackoff);
        return new(MaxAttempts, initialBackoff, maxBackoff, Jitter, RetryableErrors);
    }

    /// <summary>A copy that waits a random time up to each limit (true) or the limit itself (false).</summary>
    public CheckpointRetryPolicy WithJitter(bool jitter) =>
        new(MaxAttempts, InitialBackoff, MaxBackoff, jitter, RetryableErrors);

    /// <summary>A copy that retries exactly these daemon errors, e.g. "ThrottlingException".</summary>
    public CheckpointRetryPolicy WithRetryableErrors(IEnumerable<string> errorNames)
    {
        ArgumentNullException.ThrowIfNull(errorNames);
        return new(MaxAttempts, InitialBackoff, MaxBackoff, Jitter, errorNames.ToArray());
    }
}

/// <summary>How a processor is run. Immutable: each <c>With…</c> method returns a changed copy.</summary>
public sealed class KclOptions
{
    private KclOptions(
        ILoggerFactory? loggerFactory,
        CheckpointRetryPolicy retryPolicy,
        ProcessorExceptionPolicy exceptionPolicy,
        Stream? input,
        Stream? output)
    {
        LoggerFactory = loggerFactory;
        RetryPolicy = retryPolicy;
        ExceptionPolicy = exceptionPolicy;
        Input = input;
        Output = output;
    }

    /// <summary>The defaults: stderr logging, POLICY.md's retry policy, fail fast, the real stdin and stdout.</summary>
    public static KclOptions Default { get; } =
        new(null, CheckpointRetryPolicy.Default, ProcessorExceptionPolicy.FailFast, null, null);

    /// <summary>Where diagnostics go; null means the library's one-line stderr log (KCL_LOG_LEVEL, KCL_LOG_FILE).</summary>
    public ILoggerFactory? LoggerFactory { get; }

    /// <summary>How failed checkpoints are retried.</summary>
    public CheckpointRetryPolicy RetryPolicy { get; }

    /// <summary>What happens when a callback throws.</summary>
    public ProcessorExceptionPolicy ExceptionPolicy { get; }

    /// <summary>The daemon's stream; null means the real stdin.</summary>
    public Stream? Input { get; }

    /// <summary>The protocol's stream; null means the real stdout, taken over at the file-descriptor level.</summary>
    public Stream? Output { get; }

    /// <summary>A copy that logs through this factory.</summary>
    public KclOptions WithLoggerFactory(ILoggerFactory loggerFactory)
    {
        ArgumentNullException.ThrowIfNull(loggerFactory);
        return new(loggerFactory, RetryPolicy, ExceptionPolicy, Input, Output);
    }

    /// <summary>A copy with this retry policy.</summary>
    public KclOptions WithRetryPolicy(CheckpointRetryPolicy retryPolicy)
    {
        ArgumentNullException.ThrowIfNull(retryPolicy);
        return new(LoggerFactory, retryPolicy, ExceptionPolicy, Input, Output);
    }

    /// <summary>A copy with this exception policy.</summary>
    public KclOptions WithExceptionPolicy(ProcessorExceptionPolicy exceptionPolicy) =>
        new(LoggerFactory, RetryPolicy, exceptionPolicy, Input, Output);

    /// <summary>
    /// A copy that runs over these streams instead of the real stdin and stdout, as a test kit does. The process's
    /// console is left alone.
    /// </summary>
    public KclOptions WithStreams(Stream input, Stream output)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(output);
        return new(LoggerFactory, RetryPolicy, ExceptionPolicy, input, output);
    }

    internal Kcl.Core.Interop.RuntimeSettings ToSettings() => new()
    {
        MaxAttempts = RetryPolicy.MaxAttempts,
        InitialBackoff = RetryPolicy.InitialBackoff,
        MaxBackoff = RetryPolicy.MaxBackoff,
        FullJitter = RetryPolicy.Jitter,
        RetryableErrors = RetryPolicy.RetryableErrors,
        SkipFailedBatch = ExceptionPolicy == ProcessorExceptionPolicy.SkipFailedBatch,
        LoggerFactory = LoggerFactory,
        Input = Input,
        Output = Output,
    };
}
