(*
    The F# processor API. A processor is a function over a state of the user's choosing: it receives an event and
    returns its new state and a list of commands. A checkpoint is a command it returns, not a call it makes; the
    library carries it out and hands the outcome back as the next event.
*)
namespace Kcl.Core

open System
open System.Collections.Generic
open System.IO
open System.Threading
open System.Threading.Tasks
open Microsoft.Extensions.Logging

/// What the library tells a processor.
[<RequireQualifiedAccess>]
type Event =
    /// The child serves this shard, resuming from this checkpoint (both absent on a fresh lease of some daemons).
    | Initialized of shardId: ShardId * sequenceNumber: SequenceNumber option * subSequenceNumber: int64 option
    /// A batch of records, possibly empty, and how far behind the stream's tip it is.
    | RecordsReceived of records: Record[] * millisBehindLatest: int64 option
    /// Another worker holds the lease now; checkpointing is impossible.
    | LeaseLost
    /// The shard has ended; checkpoint at SHARD_END (`CheckpointTarget.LastDelivered`), or the library will.
    | ShardEnded
    /// The worker is shutting down or handing the lease off; a last checkpoint may be taken.
    | ShutdownRequested
    /// A checkpoint the processor asked for succeeded.
    | CheckpointSucceeded of target: CheckpointTarget
    /// A checkpoint the processor asked for failed, after the library's retries.
    | CheckpointFailed of target: CheckpointTarget * failure: CheckpointFailure

/// What a processor asks the library to do.
[<RequireQualifiedAccess>]
type Command =
    /// Checkpoint at the target; the outcome comes back as `CheckpointSucceeded` or `CheckpointFailed`.
    | Checkpoint of target: CheckpointTarget
    /// Hand a checkpoint failure to the library's policy, as an uncaught exception would be: a lease-lost failure is
    /// answered, others fail fast (POLICY.md).
    | Escalate of failure: CheckpointFailure
    /// End the current action as failed; the exception policy decides what follows.
    | Fail of reason: string
    /// Write a diagnostic to the library's log (stderr by default).
    | Log of level: LogLevel * message: string

/// A processor: an initial state and a function from state and event to the new state and commands.
[<NoEquality; NoComparison>]
type Processor<'State> =
    private
        {
            Initial: 'State
            Update: 'State -> Event -> Task<'State * Command list>
        }

/// The failure a processor's `Command.Fail` raises.
exception ProcessorFailedException of reason: string

/// How a run is wired and what it does when things go wrong.
[<NoEquality; NoComparison>]
type RunOptions =
    {
        /// How failed checkpoints are retried (POLICY.md's default unless changed).
        Retry: RetryPolicy
        /// What happens when a callback fails: fail fast (the default) or `SkipFailedBatch`.
        OnProcessorException: ExceptionPolicy
        /// Where diagnostics go; None means the library's stderr log, honouring KCL_LOG_LEVEL and KCL_LOG_FILE.
        LoggerFactory: ILoggerFactory option
        /// The daemon's stream and the protocol's stream; None means the real stdin and stdout, taken over.
        Streams: (Stream * Stream) option
    }

    /// The defaults: POLICY.md's retry policy, fail fast, stderr logging, real stdio.
    static member Default =
        {
            Retry = RetryPolicy.Default
            OnProcessorException = ExceptionPolicy.FailFast
            LoggerFactory = None
            Streams = None
        }

/// Adapts a `Processor` to the interpreter: runs the commands it returns and feeds their outcomes back.
type internal ProcessorHandler<'State>(processor: Processor<'State>, logger: ILogger) =
    let mutable state = processor.Initial

    let eventOf callback =
        match callback with
        | Lifecycle.Callback.Initialize(shardId, sequenceNumber, sub) -> Event.Initialized(shardId, sequenceNumber, sub)
        | Lifecycle.Callback.ProcessRecords(records, behind) -> Event.RecordsReceived(records, behind)
        | Lifecycle.Callback.LeaseLost -> Event.LeaseLost
        | Lifecycle.Callback.ShardEnded -> Event.ShardEnded
        | Lifecycle.Callback.ShutdownRequested -> Event.ShutdownRequested

    interface IActionHandler with
        member _.Handle(callback, checkpointer, cancellationToken) =
            task {
                let commands = Stack<Command>()

                let update event =
                    task {
                        let! next, produced = processor.Update state event
                        state <- next

                        for command in List.rev produced do
                            commands.Push command
                    }

                do! update (eventOf callback)

                while commands.Count > 0 do
                    cancellationToken.ThrowIfCancellationRequested()

                    match commands.Pop() with
                    | Command.Checkpoint target ->
                        match! checkpointer.Checkpoint target with
                        | Ok() -> do! update (Event.CheckpointSucceeded target)
                        | Error failure -> do! update (Event.CheckpointFailed(target, failure))
                    | Command.Escalate failure -> raise (Kcl.CheckpointException failure)
                    | Command.Fail reason -> raise (ProcessorFailedException reason)
                    | Command.Log(level, message) -> logger.Log(level, message)
            }
            :> Task

/// Building and running processors.
[<RequireQualifiedAccess>]
module Processor =
    /// A processor from a pure update function.
    let create (initial: 'State) (update: 'State -> Event -> 'State * Command list) : Processor<'State> =
        {
            Initial = initial
            Update = fun state event -> Task.FromResult(update state event)
        }

    /// A processor whose update returns a task, for user I/O such as writing to a database. The library's effects
    /// (checkpoints) stay commands.
    let createTask (initial: 'State) (update: 'State -> Event -> Task<'State * Command list>) : Processor<'State> =
        { Initial = initial; Update = update }

    let private runOver (options: RunOptions) (loggerFactory: ILoggerFactory) (input, output) (handler: IActionHandler) cancellationToken =
        let settings =
            {
                Input = input
                Output = output
                Logger = loggerFactory.CreateLogger "Kcl"
                Options =
                    {
                        Retry = options.Retry
                        OnProcessorException = options.OnProcessorException
                    }
                OnTransition = fun _ _ _ -> ()
            }

        Interpreter.runAsync settings handler cancellationToken

    let private defaultLoggerFactory () =
        (KclLoggerProvider.FromEnvironment Console.Error).CreateFactory()

    /// Runs a handler built from the run's logger factory; every way of running a processor ends here.
    let internal runHandlerWith (options: RunOptions) (makeHandler: ILoggerFactory -> IActionHandler) cancellationToken =
        task {
            // Timers, checkpoint retries and the callbacks of injected streams run on the thread pool. Starting its
            // threads now overlaps their creation with the rest of start-up, instead of delaying the first of them.
            ThreadPool.UnsafeQueueUserWorkItem((fun _ -> ()), null) |> ignore

            // Stdout is claimed before any logger exists, so not even the library's own start-up can write to it.
            let streams, stdio =
                match options.Streams with
                | Some streams -> streams, None
                | None ->
                    let stdio = Stdio.takeOver ()
                    (stdio.Input, stdio.Output), Some stdio

            let ownedFactory =
                match options.LoggerFactory with
                | Some _ -> None
                | None -> Some(defaultLoggerFactory ())

            try
                let loggerFactory = options.LoggerFactory |> Option.orElse ownedFactory |> Option.get
                let log = loggerFactory.CreateLogger "Kcl"

                stdio
                |> Option.iter (fun stdio ->
                    InputPipe.describe stdio.InputPipe
                    |> Option.iter (fun (level, line) -> log.Log(level, line))

                    stdio.OnSignal <-
                        fun signal ->
                            log.LogInformation(
                                "ignoring {Signal}: under the daemon, the daemon decides when this child ends",
                                signal
                            ))

                let! code = runOver options loggerFactory streams (makeHandler loggerFactory) cancellationToken
                return int code
            finally
                ownedFactory |> Option.iter _.Dispose()
        }

    /// Runs an action handler, such as the C# facade's adapter, as configured.
    let internal runHandler (options: RunOptions) (handler: IActionHandler) cancellationToken =
        runHandlerWith options (fun _ -> handler) cancellationToken

    /// Runs the processor as configured and returns the exit code (see `ExitCode`).
    let runWith (options: RunOptions) (processor: Processor<'State>) (cancellationToken: CancellationToken) : Task<int> =
        runHandlerWith
            options
            (fun loggerFactory -> ProcessorHandler(processor, loggerFactory.CreateLogger "Processor"))
            cancellationToken

    /// Runs the processor as the daemon's child over the real stdin and stdout, with the default options, and returns
    /// the process exit code. Call it from `main`.
    let run (processor: Processor<'State>) : int =
        (runWith RunOptions.Default processor CancellationToken.None).GetAwaiter().GetResult()
