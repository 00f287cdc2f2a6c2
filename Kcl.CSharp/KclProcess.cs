using Kcl.Core.Interop;

namespace Kcl;

/// <summary>Runs a record processor as the MultiLangDaemon's child process.</summary>
/// <example>
/// <code>
/// return await KclProcess.RunAsync(new MyProcessor());
/// </code>
/// </example>
public static class KclProcess
{
    /// <summary>Runs the processor over the real stdin and stdout with the default options.</summary>
    /// <returns>The process exit code: 0 when the daemon closed stdin; see the README for the others.</returns>
    public static Task<int> RunAsync(IShardRecordProcessor processor) =>
        RunAsync(processor, KclOptions.Default, CancellationToken.None);

    /// <summary>Runs the processor over the real stdin and stdout with the default options.</summary>
    /// <returns>The process exit code.</returns>
    public static Task<int> RunAsync(IShardRecordProcessor processor, CancellationToken cancellationToken) =>
        RunAsync(processor, KclOptions.Default, cancellationToken);

    /// <summary>Runs the processor as the options say.</summary>
    /// <returns>The process exit code.</returns>
    public static Task<int> RunAsync(IShardRecordProcessor processor, KclOptions options) =>
        RunAsync(processor, options, CancellationToken.None);

    /// <summary>Runs the processor as the options say; cancelling ends the run as if stdin had closed.</summary>
    /// <returns>The process exit code.</returns>
    public static Task<int> RunAsync(IShardRecordProcessor processor, KclOptions options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(processor);
        ArgumentNullException.ThrowIfNull(options);
        return Runtime.RunAsync((call, token) => Dispatch(processor, call, token), options.ToSettings(), cancellationToken);
    }

    /// <summary>Runs a legacy (KCL 1.x shaped) processor as the options say.</summary>
    /// <returns>The process exit code.</returns>
    public static Task<int> RunAsync(IRecordProcessor processor, KclOptions options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(processor);
        ArgumentNullException.ThrowIfNull(options);
        return Runtime.RunAsync((call, token) => DispatchLegacy(processor, call, token), options.ToSettings(), cancellationToken);
    }

    /// <summary>Runs a legacy (KCL 1.x shaped) processor over the real stdin and stdout with the default options.</summary>
    /// <returns>The process exit code.</returns>
    public static Task<int> RunAsync(IRecordProcessor processor) =>
        RunAsync(processor, KclOptions.Default, CancellationToken.None);

    private static Task Dispatch(IShardRecordProcessor processor, ActionCall call, CancellationToken token) =>
        call.Kind switch
        {
            ActionKind.Initialize => processor.InitializeAsync(Initialization(call), token),
            ActionKind.ProcessRecords => processor.ProcessRecordsAsync(Batch(call), token),
            ActionKind.LeaseLost => processor.LeaseLostAsync(LeaseLostInput.Instance, token),
            ActionKind.ShardEnded => processor.ShardEndedAsync(new ShardEndedInput(new ActionCheckpointer(call)), token),
            ActionKind.ShutdownRequested =>
                processor.ShutdownRequestedAsync(new ShutdownRequestedInput(new ActionCheckpointer(call)), token),
            _ => throw new InvalidOperationException($"unknown action kind {call.Kind}"),
        };

    // The core refuses a checkpoint in leaseLost locally, so ZOMBIE hands over the action's own checkpointer.
    private static Task DispatchLegacy(IRecordProcessor processor, ActionCall call, CancellationToken token) =>
        call.Kind switch
        {
            ActionKind.Initialize => processor.InitializeAsync(Initialization(call), token),
            ActionKind.ProcessRecords => processor.ProcessRecordsAsync(Batch(call), token),
            ActionKind.LeaseLost =>
                processor.ShutdownAsync(new ShutdownInput(ShutdownReason.Zombie, new ActionCheckpointer(call)), token),
            ActionKind.ShardEnded =>
                processor.ShutdownAsync(new ShutdownInput(ShutdownReason.Terminate, new ActionCheckpointer(call)), token),
            ActionKind.ShutdownRequested => Task.CompletedTask,
            _ => throw new InvalidOperationException($"unknown action kind {call.Kind}"),
        };

    private static InitializationInput Initialization(ActionCall call) =>
        new(call.ShardId, call.SequenceNumber, call.SubSequenceNumber);

    private static ProcessRecordsInput Batch(ActionCall call)
    {
        // The core hands a batch on as an array: indexed directly, a record costs no interface call.
        var batch = call.Records as Kcl.Core.Record[] ?? call.Records.ToArray();
        var records = new Record[batch.Length];
        for (var i = 0; i < records.Length; i++)
        {
            records[i] = new Record(batch[i]);
        }

        return new ProcessRecordsInput(records, call.MillisBehindLatest, new ActionCheckpointer(call));
    }
}
