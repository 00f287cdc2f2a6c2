(*
    The one place with mutation and I/O, in the manner of Elmish's dispatch loop: inputs arrive on a channel from the
    stdin reader, from callbacks and from timers; each goes through Lifecycle.transition; the effects are performed
    in order. The rules live in the lifecycle; nothing here decides.
*)
namespace Kcl.Core

open System
open System.Collections.Concurrent
open System.IO
open System.Threading
open System.Threading.Channels
open System.Threading.Tasks
open Microsoft.Extensions.Logging

/// Asks the daemon for checkpoints on behalf of one action. A request made after that action's callback has returned is
/// out of band: it is fixed to the last delivered record at once and sent with the next action that has a checkpointer.
[<Sealed>]
type Checkpointer internal (request: CheckpointTarget -> Task<Result<unit, CheckpointFailure>>) =
    /// Checkpoints at the target; the task completes once the daemon has answered and the retry policy is done.
    member _.Checkpoint(target: CheckpointTarget) = request target

/// Runs a processor's callback for one action. Both processor APIs, the pure F# one and the C# facade, are adapted
/// to this shape.
type IActionHandler =
    /// Runs the callback; the returned task completes when the processor is done with the action.
    abstract Handle:
        callback: Lifecycle.Callback * checkpointer: Checkpointer * cancellationToken: CancellationToken -> Task

/// Reads lines of any length from a stream, as bytes; `\n` ends a line and a `\r` before it is dropped.
[<Sealed>]
type internal LineReader(stream: Stream) =
    let mutable buffer: byte[] = Array.zeroCreate 65536
    let mutable start = 0
    let mutable finish = 0
    let mutable scanned = 0
    let mutable ended = false

    /// The next line, or None at the end of the stream. The memory is valid until the next call.
    member _.ReadLineAsync(cancellationToken: CancellationToken) : Task<ReadOnlyMemory<byte> voption> =
        task {
            let mutable result = ValueNone
            let mutable searching = true

            while searching do
                let newline = Array.IndexOf(buffer, 10uy, scanned, finish - scanned)

                if newline >= 0 then
                    let length =
                        if newline > start && buffer[newline - 1] = 13uy then newline - 1 - start else newline - start

                    result <- ValueSome(ReadOnlyMemory<byte>(buffer, start, length))
                    start <- newline + 1
                    scanned <- start
                    searching <- false
                elif ended then
                    if finish > start then
                        result <- ValueSome(ReadOnlyMemory<byte>(buffer, start, finish - start))
                        start <- finish
                        scanned <- finish

                    searching <- false
                else
                    // Only the bytes read from now on can hold the newline, so long lines are scanned once.
                    scanned <- finish

                    if start > 0 then
                        Buffer.BlockCopy(buffer, start, buffer, 0, finish - start)
                        finish <- finish - start
                        scanned <- scanned - start
                        start <- 0

                    if finish = buffer.Length then
                        Array.Resize(&buffer, buffer.Length * 2)

                    let! read = stream.ReadAsync(buffer.AsMemory(finish), cancellationToken)

                    if read = 0 then ended <- true else finish <- finish + read

            return result
        }

/// Where a run reads, writes and logs, and how it behaves.
type RunSettings =
    {
        /// The daemon's messages (the child's stdin).
        Input: Stream
        /// The protocol channel (the child's stdout); nothing else is written to it.
        Output: Stream
        /// Where the library's diagnostics go.
        Logger: ILogger
        /// The retry and exception policies.
        Options: Lifecycle.Options
        /// Called after every transition, for tracing; the default does nothing.
        OnTransition: Lifecycle.Input -> Lifecycle.State -> Lifecycle.Effect list -> unit
    }

/// Runs the lifecycle over streams.
[<RequireQualifiedAccess>]
module Interpreter =
    /// How much of an undecodable line goes into the log.
    [<Literal>]
    let private ExcerptBytes = 1024

    let private excerpt (line: ReadOnlyMemory<byte>) =
        let shown = line.Slice(0, min line.Length ExcerptBytes)
        let text = Text.Encoding.UTF8.GetString shown.Span
        if line.Length > ExcerptBytes then text + "…" else text

    let private failureOf (error: exn) : Lifecycle.ProcessorFailure =
        let rec unwrap (error: exn) =
            match error with
            | :? AggregateException as aggregate when aggregate.InnerExceptions.Count = 1 -> unwrap aggregate.InnerException
            | _ -> error

        let error = unwrap error

        {
            Description = error.ToString()
            Checkpoint =
                match error with
                | :? Kcl.CheckpointException as failed -> Some failed.Failure
                | _ -> None
        }

    let private readInput (settings: RunSettings) (post: Lifecycle.Input -> unit) (cancellationToken: CancellationToken) =
        task {
            let reader = LineReader settings.Input
            let mutable reading = true

            while reading do
                match! reader.ReadLineAsync cancellationToken with
                | ValueNone ->
                    post Lifecycle.Input.EndOfInput
                    reading <- false
                | ValueSome line when line.IsEmpty -> ()
                | ValueSome line ->
                    match Json.decodeDaemonMessage line.Span with
                    | Ok message -> post (Lifecycle.Input.Received message)
                    | Error error -> post (Lifecycle.Input.Undecodable(error, excerpt line))
        }

    let private write (output: Stream) (message: ChildMessage) =
        task {
            // A newline first keeps anything already in the pipe, such as a BOM, off the message's line.
            let line = "\n" + Json.encodeChildMessage message + "\n"
            do! output.WriteAsync(Text.Encoding.ASCII.GetBytes line)
            do! output.FlushAsync()
        }

    /// Runs one child's whole life over the given streams and returns its exit code. Cancelling ends the run as if stdin
    /// had closed.
    let runAsync (settings: RunSettings) (handler: IActionHandler) (cancellationToken: CancellationToken) : Task<ExitCode> =
        task {
            use stop = CancellationTokenSource.CreateLinkedTokenSource cancellationToken
            let inputs = Channel.CreateUnbounded<Lifecycle.Input>(UnboundedChannelOptions(SingleReader = true))
            let post input = inputs.Writer.TryWrite input |> ignore
            let pending = ConcurrentDictionary<int, TaskCompletionSource<Result<unit, CheckpointFailure>>>()
            let mutable nextRequest = 0
            let mutable shardScope: IDisposable = null

            let checkpointerFor action =
                Checkpointer(fun target ->
                    let request = Interlocked.Increment &nextRequest
                    let completion = TaskCompletionSource<_>(TaskCreationOptions.RunContinuationsAsynchronously)
                    pending[request] <- completion
                    post (Lifecycle.Input.CheckpointRequested(request, action, target))
                    completion.Task)

            let invoke action callback =
                let run () =
                    handler.Handle(callback, checkpointerFor action, stop.Token)

                Task
                    .Run<unit>(fun () -> task { do! run () })
                    .ContinueWith(fun (finished: Task) ->
                        if finished.IsCompletedSuccessfully then
                            post (Lifecycle.Input.CallbackReturned action)
                        elif finished.IsCanceled then
                            post (Lifecycle.Input.CallbackFailed(action, failureOf (OperationCanceledException())))
                        else
                            post (Lifecycle.Input.CallbackFailed(action, failureOf finished.Exception)))
                |> ignore

            let waitThenRetry (backoff: Backoff) =
                let delay =
                    match backoff with
                    | Backoff.Exactly delay -> delay
                    | Backoff.UpTo limit -> TimeSpan.FromTicks(int64 (Random.Shared.NextDouble() * float limit.Ticks))

                Task.Delay(delay, stop.Token).ContinueWith(fun (_: Task) -> post Lifecycle.Input.RetryDue) |> ignore

            let reading = readInput settings post stop.Token

            reading.ContinueWith(fun (failed: Task) ->
                if failed.IsFaulted && not stop.IsCancellationRequested then
                    settings.Logger.LogError(failed.Exception, "reading stdin failed")
                    post Lifecycle.Input.EndOfInput)
            |> ignore

            use _ = stop.Token.Register(fun () -> post Lifecycle.Input.EndOfInput)
            let mutable state = Lifecycle.initial settings.Options
            let mutable exitCode = None

            try
                while exitCode.IsNone do
                    let! input = inputs.Reader.ReadAsync()
                    let next, effects = Lifecycle.transition input state

                    if next.ShardId <> state.ShardId then
                        match next.ShardId with
                        | Some shard ->
                            shardScope <- settings.Logger.BeginScope(dict [ LogScope.ShardId, box shard.Value ])
                        | None -> ()

                    state <- next
                    settings.OnTransition input state effects

                    for effect in effects do
                        match effect with
                        | Lifecycle.Effect.Send message -> do! write settings.Output message
                        | Lifecycle.Effect.Invoke(action, callback) -> invoke action callback
                        | Lifecycle.Effect.CompleteCheckpoints(requests, outcome) ->
                            for request in requests do
                                match pending.TryRemove request with
                                | true, completion -> completion.TrySetResult outcome |> ignore
                                | false, _ -> ()
                        | Lifecycle.Effect.WaitBeforeRetry backoff -> waitThenRetry backoff
                        | Lifecycle.Effect.Log(level, message) -> settings.Logger.Log(level, message)
                        | Lifecycle.Effect.Exit code -> exitCode <- Some code
            with error ->
                settings.Logger.LogCritical(error, "the library failed; this is a bug in Kcl.Core")
                exitCode <- Some ExitCode.InternalError

            stop.Cancel()

            if not (isNull shardScope) then
                shardScope.Dispose()

            return exitCode.Value
        }
