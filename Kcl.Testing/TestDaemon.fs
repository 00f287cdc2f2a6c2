(*
    The in-memory daemon: runs a processor over in-memory pipes and plays a ShardScript against it through the
    daemon-side session of Kcl.Core, which knows how the real daemon answers and what it would choke on.
*)
namespace Kcl.Testing

open System
open System.IO
open System.IO.Pipelines
open System.Threading
open System.Threading.Tasks
open Kcl
open Kcl.Core
open Microsoft.Extensions.Logging.Abstractions

/// Drives a processor through a scripted shard lifecycle, with no daemon, Java or AWS.
[<AbstractClass; Sealed>]
type TestDaemon =
    /// The options a test run uses unless given others: no logging, and the default retry policy's attempts without
    /// its waits, so an injected ThrottlingException costs no time.
    static member DefaultOptions =
        KclOptions.Default
            .WithLoggerFactory(NullLoggerFactory.Instance)
            .WithRetryPolicy(CheckpointRetryPolicy.Default.WithBackoff(TimeSpan.Zero, TimeSpan.Zero))

    /// Plays the script against a child given as a function of its stdin and stdout, and returns what happened.
    static member RunAsync(child: Func<Stream, Stream, CancellationToken, Task<int>>, script: ShardScript) : Task<TestRun> =
        if isNull child then nullArg (nameof child)
        if isNull (box script) then nullArg (nameof script)

        task {
            let toChild = Pipe()
            let fromChild = Pipe()
            use stop = new CancellationTokenSource()

            let running =
                Task.Run<int>(fun () ->
                    task {
                        try
                            return! child.Invoke(toChild.Reader.AsStream(), fromChild.Writer.AsStream(), stop.Token)
                        finally
                            // The child's stdout ends with the child, as a process's would.
                            fromChild.Writer.Complete()
                    })

            use reader = new StreamReader(fromChild.Reader.AsStream(), Text.Encoding.UTF8)
            // One read may outlive a timeout; it is awaited again rather than overlapped.
            let mutable pendingRead: Task<string> = null

            let readLine (timeout: TimeSpan) =
                task {
                    if isNull pendingRead then pendingRead <- reader.ReadLineAsync()

                    try
                        let! line = pendingRead.WaitAsync timeout
                        pendingRead <- null
                        return Some line
                    with :? TimeoutException ->
                        return None
                }

            let write (bytes: byte[]) =
                task {
                    let! _ = toChild.Writer.WriteAsync(ReadOnlyMemory bytes)
                    ()
                }

            let options =
                { SessionOptions.Create(ShardId script.ShardId) with Faults = script.Faults }

            let mutable session = DaemonSession.create options
            let mutable actions = script.Initialize :: script.Actions
            let mutable playing = true

            let send message =
                task {
                    match DaemonSession.trySend message session with
                    | Ok(next, bytes) ->
                        session <- next
                        do! write bytes
                    | Error reason -> invalidOp (sprintf "the script cannot go on: %s" reason)
                }

            while playing do
                match DaemonSession.nextStep session with
                | Next.ReadLine ->
                    match! readLine script.Timeout with
                    | None ->
                        session <- DaemonSession.recordDriverFailure DriverFailure.TimedOut session
                        playing <- false
                    | Some null ->
                        let code = if running.IsCompletedSuccessfully then Some running.Result else None
                        session <- DaemonSession.recordDriverFailure (DriverFailure.ChildExited code) session
                        playing <- false
                    | Some line ->
                        let next, outcome = DaemonSession.receive line session
                        session <- next

                        if outcome.ReplyBytes.Length > 0 then
                            do! write outcome.ReplyBytes
                | Next.SendAction ->
                    match actions with
                    | action :: rest ->
                        actions <- rest
                        do! send action
                    | [] -> playing <- false
                | Next.SendLeaseLost ->
                    actions <- []
                    do! send DaemonMessage.LeaseLost
                | _ -> playing <- false

            do! toChild.Writer.CompleteAsync()

            let! exited =
                task {
                    try
                        do! (running :> Task).WaitAsync script.Timeout
                        return true
                    with
                    | :? TimeoutException -> return false
                    | _ -> return true
                }

            if not exited then
                session <- DaemonSession.recordDriverFailure DriverFailure.NoExitAfterEndOfInput session
                stop.Cancel()

            // Whatever the child wrote after the last action is read as the daemon's drain would read it.
            let mutable draining = exited

            while draining do
                match! readLine script.Timeout with
                | Some null
                | None -> draining <- false
                | Some line -> session <- fst (DaemonSession.receive line session)

            if running.IsFaulted then
                return raise (AggregateException("the processor's run failed", running.Exception.InnerExceptions))
            else
                return TestRun(session, (if running.IsCompletedSuccessfully then Some running.Result else None))
        }

    /// Plays the script against a C# processor run with these options (their streams are replaced by the test's).
    static member RunAsync(processor: IShardRecordProcessor, script: ShardScript, options: KclOptions) =
        if isNull processor then nullArg (nameof processor)
        if isNull options then nullArg (nameof options)

        TestDaemon.RunAsync(
            Func<_, _, _, _>(fun input output token -> KclProcess.RunAsync(processor, options.WithStreams(input, output), token)),
            script
        )

    /// Plays the script against a C# processor run with `DefaultOptions`.
    static member RunAsync(processor: IShardRecordProcessor, script: ShardScript) =
        TestDaemon.RunAsync(processor, script, TestDaemon.DefaultOptions)

    /// Plays the script against a legacy (KCL 1.x shaped) processor run with `DefaultOptions`.
    static member RunAsync(processor: IRecordProcessor, script: ShardScript) =
        if isNull processor then nullArg (nameof processor)

        TestDaemon.RunAsync(
            Func<_, _, _, _>(fun input output token ->
                KclProcess.RunAsync(processor, TestDaemon.DefaultOptions.WithStreams(input, output), token)),
            script
        )

/// The test daemon for F# processors.
[<RequireQualifiedAccess>]
module ProcessorTest =
    /// Plays the script against a pure (or task-based) F# processor with these options (their streams are replaced).
    let runWith (options: RunOptions) (script: ShardScript) (processor: Processor<'State>) : Task<TestRun> =
        TestDaemon.RunAsync(
            Func<_, _, _, _>(fun input output token ->
                Processor.runWith { options with Streams = Some(input, output) } processor token),
            script
        )

    /// Plays the script against an F# processor with no logging and the default retry policy's attempts, no waits.
    let run (script: ShardScript) (processor: Processor<'State>) : Task<TestRun> =
        let options =
            { RunOptions.Default with
                Retry =
                    { RetryPolicy.Default with
                        InitialBackoff = TimeSpan.Zero
                        MaxBackoff = TimeSpan.Zero
                    }
                LoggerFactory = Some NullLoggerFactory.Instance
            }

        runWith options script processor
