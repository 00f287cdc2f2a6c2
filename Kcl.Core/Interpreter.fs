(*
    The one place with mutation and I/O, in the manner of Elmish's dispatch loop: inputs arrive on a channel from the
    stdin reader, from callbacks and from timers; each goes through Lifecycle.transition; the effects are performed
    in order. The rules live in the lifecycle; nothing here decides.
*)
namespace Kcl.Core

open System
open System.Buffers
open System.Collections.Concurrent
open System.Collections.Generic
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

/// A piece of a line too long for the reader's buffer: the line is handed on as a chain of these, never copied into
/// one array, so a 14 MB line costs its own size and not a run of doubling copies.
[<Sealed; AllowNullLiteral>]
type internal LineSegment(memory: ReadOnlyMemory<byte>, runningIndex: int64) as this =
    inherit ReadOnlySequenceSegment<byte>()

    do
        this.Memory <- memory
        this.RunningIndex <- runningIndex

    /// Links the next piece after this one and returns it.
    member this.Append(next: ReadOnlyMemory<byte>) =
        let segment = LineSegment(next, runningIndex + int64 memory.Length)
        this.Next <- segment
        segment

/// Sees a line longer than the line reader's buffer as it is read, before the line is whole.
[<AllowNullLiteral>]
type internal ILinePieces =
    /// Called after reads of such a line, each time a sixteenth of the reader's buffer limit more has come: `lineSoFar`
    /// is all of it read so far, and `first` says the line is new.
    abstract ReadSoFar: lineSoFar: ReadOnlySequence<byte> * first: bool -> unit

/// Reads lines of any length from a stream, as bytes; `\n` ends a line and a `\r` before it is dropped. The buffer
/// doubles, from `bufferSize` up to `contiguousLimit`, to keep a line whole (a line in one span decodes faster than
/// one in pieces) or to drain a backlog in fewer reads. A longer line is handed on in pieces of the buffer's size.
[<Sealed>]
type internal LineReader(stream: Stream, bufferSize: int, contiguousLimit: int) =
    let mutable buffer: byte[] = Array.zeroCreate bufferSize
    let mutable start = 0
    let mutable finish = 0
    let mutable scanned = 0
    let mutable ended = false
    // Whether the last read filled all the room it was given, so that more is probably waiting. Each read that makes
    // room in a full pipe wakes its writer: on the benchmark's streams, reading up to 1 MiB instead of 256 KiB at a
    // time took 15-19% off the child's system time (bench/README.md, "Eighteenth round").
    let mutable backlog = false
    // The full buffers of the line being read, when it is longer than one buffer.
    let pieces = ResizeArray<byte[]>()
    // The pieces handed out with the last line: free again once the caller asks for the next one.
    let lent = ResizeArray<byte[]>()
    let spare = Stack<byte[]>()
    // Spare pieces are kept for the next long line: 2 MiB of them, or as many as the longest of the last four lines
    // used. A stream of long lines (checkpoint replies in between) then reuses its pieces instead of allocating them
    // anew on the large-object heap for every line; a rare long line's go to the collector four lines later.
    let minSpareBytes = 2 * 1024 * 1024
    let recentPieces = Array.zeroCreate<int> 4
    let mutable lines = 0

    let reclaim () =
        recentPieces[lines % recentPieces.Length] <- lent.Count
        lines <- lines + 1
        let keep = max (minSpareBytes / buffer.Length) (Array.max recentPieces)

        while spare.Count > keep do
            spare.Pop() |> ignore

        for piece in lent do
            // A piece cut before the buffer last grew is of the old size: it can no longer stand in for the buffer.
            if piece.Length = buffer.Length && spare.Count < keep then
                spare.Push piece

        lent.Clear()

    // One sequence over the parts, in order.
    let chain (parts: ResizeArray<ReadOnlyMemory<byte>>) =
        if parts.Count = 0 then
            ReadOnlySequence<byte>.Empty
        elif parts.Count = 1 then
            ReadOnlySequence<byte>(parts[0])
        else
            let first = LineSegment(parts[0], 0L)
            let mutable lastSegment = first

            for i in 1 .. parts.Count - 1 do
                lastSegment <- lastSegment.Append parts[i]

            ReadOnlySequence<byte>(first, 0, lastSegment, lastSegment.Memory.Length)

    // The full pieces so far, with room for `extra` more parts.
    let piecesAsParts (extra: int) =
        let parts = ResizeArray<ReadOnlyMemory<byte>>(pieces.Count + extra)

        for piece in pieces do
            parts.Add(ReadOnlyMemory piece)

        parts

    // How much of the line being read the observer has seen (0: none of it), and how much more a read must bring
    // before it is shown again: a writer that trickles a long line in small writes would otherwise have it shown,
    // and its last record looked for, after every few kilobytes.
    let mutable shown = 0L
    let showingStep = max 1 (contiguousLimit / 16)

    /// The line made of the pieces so far and `length` bytes of the buffer from `start`, without a trailing `\r`.
    let assemble (length: int) (dropCarriageReturn: bool) =
        if pieces.Count = 0 then
            let length =
                if dropCarriageReturn && length > 0 && buffer[start + length - 1] = 13uy then
                    length - 1
                else
                    length

            ReadOnlySequence<byte>(buffer, start, length)
        else
            let parts = piecesAsParts 1

            if length > 0 then
                parts.Add(ReadOnlyMemory<byte>(buffer, start, length))

            lent.AddRange pieces
            pieces.Clear()
            shown <- 0L

            // The `\r` may be the last byte of the previous piece when the newline starts a buffer.
            if dropCarriageReturn then
                let last = parts[parts.Count - 1]

                if last.Span[last.Length - 1] = 13uy then
                    if last.Length = 1 then
                        parts.RemoveAt(parts.Count - 1)
                    else
                        parts[parts.Count - 1] <- last.Slice(0, last.Length - 1)

            chain parts

    /// A buffer of a fixed size: every line longer than it comes in pieces.
    new(stream, bufferSize) = LineReader(stream, bufferSize, bufferSize)

    /// 64 KiB, doubling up to 1 MiB: a batch of 500 records of 1 KiB (about 700 KB) stays whole.
    new(stream) = LineReader(stream, 65536, 1024 * 1024)

    /// The next line if the buffer holds its end (or, at the end of the stream, the rest); `searching` stays true
    /// when more bytes must be read first.
    member private _.TryTake(searching: byref<bool>) =
        let newline = Array.IndexOf(buffer, 10uy, scanned, finish - scanned)

        if newline >= 0 then
            let line = assemble (newline - start) true
            start <- newline + 1
            scanned <- start
            searching <- false
            ValueSome line
        elif ended then
            searching <- false

            if finish > start || pieces.Count > 0 then
                let rest = assemble (finish - start) false
                start <- finish
                scanned <- finish
                ValueSome rest
            else
                ValueNone
        else
            ValueNone

    /// Makes room after the buffered bytes and returns it.
    member private _.Space() =
        // Only the bytes read from now on can hold the newline, so long lines are scanned once.
        scanned <- finish

        if start > 0 then
            Buffer.BlockCopy(buffer, start, buffer, 0, finish - start)
            finish <- finish - start
            scanned <- scanned - start
            start <- 0

        if (finish = buffer.Length || backlog) && pieces.Count = 0 && buffer.Length < contiguousLimit then
            // A full buffer holds the start of one line, which a bigger one keeps whole; or the stream has a backlog,
            // which a bigger one drains in fewer reads.
            let bigger = GC.AllocateUninitializedArray(min contiguousLimit (buffer.Length * 2))
            Buffer.BlockCopy(buffer, 0, bigger, 0, finish)
            buffer <- bigger
            spare.Clear()
        elif finish = buffer.Length then
            // A full buffer holds part of one line: keep it as a piece and read on into a new one.
            pieces.Add buffer
            buffer <- if spare.Count > 0 then spare.Pop() else GC.AllocateUninitializedArray buffer.Length
            finish <- 0
            scanned <- 0

        buffer.AsMemory finish

    member private _.Filled(read: int, room: int) =
        backlog <- read = room
        if read = 0 then ended <- true else finish <- finish + read

    // A line longer than the buffer, still without its end: the observer sees all of it read so far, after each read
    // that brought enough, so that it can work while the writer writes the rest.
    member private this.ShowLongLine() =
        match this.Pieces with
        | null -> ()
        | seen when pieces.Count > 0 ->
            let lineSoFar = int64 pieces.Count * int64 buffer.Length + int64 finish

            if lineSoFar - shown >= int64 showingStep then
                let parts = piecesAsParts 1
                parts.Add(ReadOnlyMemory<byte>(buffer, 0, finish))
                seen.ReadSoFar(chain parts, (shown = 0L))
                shown <- lineSoFar
        | _ -> ()

    /// Watches the stream before each blocking read (stdin's pipe); null for none.
    member val Watch: PipeWatch = null with get, set

    /// Sees each line longer than the buffer as it is read; null for none.
    member val Pieces: ILinePieces = null with get, set

    /// The next line, or None at the end of the stream, blocking while it waits. The bytes are valid until the next
    /// call.
    member this.ReadLine() : ReadOnlySequence<byte> voption =
        reclaim ()
        let mutable searching = true
        let mutable result = this.TryTake &searching

        while searching do
            let space = this.Space()

            match this.Watch with
            | null -> this.Filled(stream.Read space.Span, space.Length)
            | watch ->
                let began = watch.BeforeRead()
                this.Filled(stream.Read space.Span, space.Length)
                watch.AfterRead began

            result <- this.TryTake &searching

            if searching then
                this.ShowLongLine()

        result

    /// The next line, or None at the end of the stream. The bytes are valid until the next call.
    member this.ReadLineAsync(cancellationToken: CancellationToken) : Task<ReadOnlySequence<byte> voption> =
        reclaim ()

        task {
            let mutable searching = true
            let mutable result = this.TryTake &searching

            while searching do
                let space = this.Space()
                let! read = stream.ReadAsync(space, cancellationToken)
                this.Filled(read, space.Length)
                result <- this.TryTake &searching

                if searching then
                    this.ShowLongLine()

            return result
        }

/// Decodes the daemon's lines as the line reader hands them on. A batch longer than the reader's buffer is decoded
/// record by record as its pieces are read (JsonDecode.BatchInPieces), while the daemon writes the rest.
[<Sealed>]
type internal DaemonLines() =
    let mutable batch: JsonDecode.BatchInPieces voption = ValueNone

    /// How many records of the batch being read are decoded so far.
    member _.DecodedSoFar =
        match batch with
        | ValueSome started -> started.Decoded
        | ValueNone -> 0

    /// The line's message, or the problem with it.
    member _.Decode(line: ReadOnlySequence<byte>) =
        let started = batch
        batch <- ValueNone

        if line.IsSingleSegment then
            Json.decodeDaemonMessage line.FirstSpan
        else
            match started with
            | ValueSome started -> Json.decodeDaemonPieces started line
            | ValueNone -> Json.decodeDaemonSequence line

    interface ILinePieces with
        member _.ReadSoFar(lineSoFar, first) =
            if first then
                batch <- ValueSome(JsonDecode.BatchInPieces())

            match batch with
            | ValueSome started -> started.Advance lineSoFar
            | ValueNone -> ()

/// The thread that reads stdin over a pipe, and the user code it runs between lines. A callback that starts on the
/// thread that read its batch, and goes on there after its checkpoint's reply, costs no thread-pool wake-ups: on the
/// benchmark's streams that cut the child's CPU per record by about a quarter (bench/README.md, "Fifth round").
/// User code runs only after the loop has handled the line, never inside it. If user code keeps the thread for a
/// watchdog period (blocking on a checkpoint, say), a new thread takes over reading, so the reply or the end of stdin
/// still gets through; from then on, callbacks start on the thread pool. The watchdog sleeps while the child is idle.
[<Sealed>]
type internal StdinThread
    (
        reader: LineReader,
        deliver: ReadOnlySequence<byte> voption -> bool,
        logger: ILogger,
        onFailure: string -> exn -> unit
    ) as this =
    static let reading, inUserCode, abandoned = 0, 1, 2
    // How long user code may keep the thread, at least; at most twice this.
    static let watchdogPeriod = TimeSpan.FromMilliseconds 100.0
    static let runItem = ContextCallback(fun item -> (item :?> (unit -> unit)) ())

    let mutable state = reading
    let mutable owner: Thread = null
    let mutable entries = 0L
    let mutable entriesAtLastTick = -1L
    let mutable runsUserCode = true
    // Whether the watchdog ticks; it is stopped and started under the gate.
    let mutable armed = false
    let gate = obj ()
    // Touched only by the thread that owns the reading, and handed over with it.
    let queued = Queue<struct (ExecutionContext * (unit -> unit))>()

    let watchdog =
        new Timer((fun _ -> this.Tick()), null, Timeout.Infinite, Timeout.Infinite)

    /// Starts reading on a thread of its own.
    member this.Start() =
        this.Arm()
        this.ReadOnNewThread()

    member private _.Arm() =
        lock gate (fun () ->
            if not armed then
                armed <- true
                watchdog.Change(watchdogPeriod, watchdogPeriod) |> ignore)

    member private this.ReadOnNewThread() =
        // A thread of its own, blocked in read(2) while the daemon is quiet; a background thread, so it never keeps
        // the process alive.
        Task.Factory.StartNew(
            (fun () -> this.Read()),
            CancellationToken.None,
            TaskCreationOptions.LongRunning,
            TaskScheduler.Default
        )
        |> ignore

    /// Runs `item` on this thread once the loop is done with the current line, if the loop runs on this thread now,
    /// between lines; false otherwise, and the caller runs it elsewhere.
    member _.TryRunHere(item: unit -> unit) =
        if
            Volatile.Read &runsUserCode
            && obj.ReferenceEquals(Thread.CurrentThread, owner)
            && Volatile.Read &state = reading
        then
            queued.Enqueue(struct (ExecutionContext.Capture(), item))
            true
        else
            false

    member private this.RunQueued() =
        let mutable keep = true

        while keep && queued.Count > 0 do
            let struct (context, item) = queued.Dequeue()
            Interlocked.Increment &entries |> ignore
            // A full fence between this write and the read of `armed`, as in Tick the other way round: one of the two
            // sees the other's write, so user code never runs with the watchdog stopped.
            Interlocked.Exchange(&state, inUserCode) |> ignore

            if not (Volatile.Read &armed) then
                this.Arm()

            try
                if isNull context then item () else ExecutionContext.Run(context, runItem, item)
            with error ->
                onFailure "a callback's start failed on the stdin thread; this is a bug in Kcl.Core" error

            // Fails when the watchdog gave the reading to another thread meanwhile: this one must not touch it again.
            keep <- Interlocked.CompareExchange(&state, reading, inUserCode) = inUserCode

        keep

    member private this.Read() =
        owner <- Thread.CurrentThread
        Volatile.Write(&state, reading)

        try
            // What an abandoned thread left queued goes to the thread pool, as everything does from now on.
            while queued.Count > 0 do
                let struct (context, item) = queued.Dequeue()

                ThreadPool.QueueUserWorkItem(fun _ ->
                    if isNull context then item () else ExecutionContext.Run(context, runItem, item))
                |> ignore

            let mutable go = true

            while go do
                go <- deliver (reader.ReadLine())
                go <- this.RunQueued() && go
        with error ->
            onFailure "reading stdin failed" error

    member private this.Tick() =
        lock gate (fun () ->
            Interlocked.Exchange(&armed, false) |> ignore
            let entered = Volatile.Read &entries
            let current = Volatile.Read &state

            if current = inUserCode && entered = entriesAtLastTick then
                if Interlocked.CompareExchange(&state, abandoned, inUserCode) = inUserCode then
                    Volatile.Write(&runsUserCode, false)
                    watchdog.Change(Timeout.Infinite, Timeout.Infinite) |> ignore

                    // Said before it happens: once the new thread reads, the run may end before a line logged after.
                    logger.LogInformation(
                        "a callback kept the stdin thread busy for over {Milliseconds} ms; another thread reads stdin "
                        + "now, and callbacks start on the thread pool from now on",
                        watchdogPeriod.TotalMilliseconds
                    )

                    this.ReadOnNewThread()
            elif current = reading && entered = entriesAtLastTick then
                // Quiet for a whole period: an idle child wakes no thread until user code runs again.
                watchdog.Change(Timeout.Infinite, Timeout.Infinite) |> ignore
            else
                armed <- true

            entriesAtLastTick <- entered)

    interface IDisposable with
        member _.Dispose() = watchdog.Dispose()

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

    let private excerpt (line: ReadOnlySequence<byte>) =
        let shown = line.Slice(0L, min line.Length (int64 ExcerptBytes))
        let text = Text.Encoding.UTF8.GetString(shown.ToArray())

        if line.Length > int64 ExcerptBytes then
            text + "…"
        else
            text

    let private failureOf (error: exn) : Lifecycle.ProcessorFailure =
        let rec unwrap (error: exn) =
            match error with
            | :? AggregateException as aggregate when aggregate.InnerExceptions.Count = 1 ->
                unwrap aggregate.InnerException
            | _ -> error

        let error = unwrap error

        {
            Description = error.ToString()
            Checkpoint =
                match error with
                | :? Kcl.CheckpointException as failed -> Some failed.Failure
                | _ -> None
        }

    let private decode (lines: DaemonLines) (post: Lifecycle.Input -> unit) (line: ReadOnlySequence<byte> voption) =
        match line with
        | ValueNone ->
            post Lifecycle.Input.EndOfInput
            false
        | ValueSome(line: ReadOnlySequence<byte>) when line.IsEmpty -> true
        | ValueSome line ->
            let decoded = lines.Decode line

            match decoded with
            | Ok message -> post (Lifecycle.Input.Received message)
            | Error error -> post (Lifecycle.Input.Undecodable(error, excerpt line))

            true

    /// Reads the daemon's lines asynchronously: streams other than a pipe's FileStream (tests, the test kit).
    let private readAsync
        (settings: RunSettings)
        (post: Lifecycle.Input -> unit)
        (cancellationToken: CancellationToken)
        =
        let lines = DaemonLines()
        let reader = LineReader(settings.Input, Pieces = lines)

        task {
            let mutable reading = true

            while reading do
                let! line = reader.ReadLineAsync cancellationToken
                reading <- decode lines post line
        }

    let private write (output: Stream) (message: ChildMessage) =
        // A newline first keeps anything already in the pipe, such as a BOM, off the message's line.
        let line =
            Text.Encoding.ASCII.GetBytes("\n" + Json.encodeChildMessage message + "\n")

        match output with
        | :? FileStream ->
            // Synchronous for the same reason as the reads: a line fits in the pipe's buffer, so write(2) returns at once.
            output.Write line
            output.Flush()
            Task.CompletedTask
        | _ ->
            task {
                do! output.WriteAsync line
                do! output.FlushAsync()
            }

    /// Runs one child's whole life over the given streams and returns its exit code. Cancelling ends the run as if stdin
    /// had closed.
    let runAsync
        (settings: RunSettings)
        (handler: IActionHandler)
        (cancellationToken: CancellationToken)
        : Task<ExitCode> =
        task {
            use stop = CancellationTokenSource.CreateLinkedTokenSource cancellationToken

            // Synchronous continuations: whoever posts (the stdin thread, a finished callback, a checkpoint request)
            // runs the loop's next steps itself, instead of waking another thread for each step of the lock-step
            // exchange. User code never runs inline on the loop: callbacks and checkpoint completions run on the stdin
            // thread once the loop is done with the line, or on the thread pool (runOutsideTheLoop).
            let inputs =
                Channel.CreateUnbounded<Lifecycle.Input>(
                    UnboundedChannelOptions(SingleReader = true, AllowSynchronousContinuations = true)
                )

            let post input = inputs.Writer.TryWrite input |> ignore

            let pending =
                ConcurrentDictionary<int, TaskCompletionSource<Result<unit, CheckpointFailure>>>()

            let mutable nextRequest = 0
            let mutable shardScope: IDisposable = null

            let readingFailed (what: string) (error: exn) =
                if not stop.IsCancellationRequested then
                    settings.Logger.LogError(error, what)
                    post Lifecycle.Input.EndOfInput

            // A FileStream over a pipe has no asynchronous reads: each ReadAsync would be a round trip through the
            // thread pool. It gets a thread of its own, which also starts the callbacks.
            let stdinThread =
                match settings.Input with
                | :? FileStream ->
                    let lines = DaemonLines()
                    let reader = LineReader(settings.Input, Pieces = lines, Watch = PipeWatch.ForStdin settings.Input)
                    Some(new StdinThread(reader, decode lines post, settings.Logger, readingFailed))
                | _ -> None

            /// Runs user code on the stdin thread if the loop runs there now, between lines; else on the thread pool.
            let runOutsideTheLoop (item: unit -> unit) =
                let ranHere =
                    match stdinThread with
                    | Some thread -> thread.TryRunHere item
                    | None -> false

                if not ranHere then
                    ThreadPool.QueueUserWorkItem(fun _ -> item ()) |> ignore

            let checkpointerFor action =
                Checkpointer(fun target ->
                    let request = Interlocked.Increment &nextRequest

                    // Continuations run where it is completed: always outside the loop (runOutsideTheLoop).
                    let completion = TaskCompletionSource<_>()

                    pending[request] <- completion
                    post (Lifecycle.Input.CheckpointRequested(request, action, target))
                    completion.Task)

            let invoke action callback =
                // The end of the callback is posted from the thread it ended on (ExecuteSynchronously): only a post, so
                // no user code runs there.
                let start () =
                    let running =
                        try
                            handler.Handle(callback, checkpointerFor action, stop.Token)
                        with error ->
                            Task.FromException error

                    running.ContinueWith(
                        (fun (finished: Task) ->
                            if finished.IsCompletedSuccessfully then
                                post (Lifecycle.Input.CallbackReturned action)
                            elif finished.IsCanceled then
                                post (Lifecycle.Input.CallbackFailed(action, failureOf (OperationCanceledException())))
                            else
                                post (Lifecycle.Input.CallbackFailed(action, failureOf finished.Exception))),
                        TaskContinuationOptions.ExecuteSynchronously
                    )
                    |> ignore

                runOutsideTheLoop start

            let waitThenRetry (backoff: Backoff) =
                let delay =
                    match backoff with
                    | Backoff.Exactly delay -> delay
                    | Backoff.UpTo limit -> TimeSpan.FromTicks(int64 (Random.Shared.NextDouble() * float limit.Ticks))

                Task.Delay(delay, stop.Token).ContinueWith(fun (_: Task) -> post Lifecycle.Input.RetryDue)
                |> ignore

            match stdinThread with
            | Some thread -> thread.Start()
            | None ->
                (readAsync settings post stop.Token)
                    .ContinueWith(fun (failed: Task) ->
                        if failed.IsFaulted then
                            readingFailed "reading stdin failed" failed.Exception)
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
                            shardScope <- settings.Logger.BeginScope(ShardScope shard.Value)
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
                                | true, completion ->
                                    runOutsideTheLoop (fun () -> completion.TrySetResult outcome |> ignore)
                                | false, _ -> ()
                        | Lifecycle.Effect.WaitBeforeRetry backoff -> waitThenRetry backoff
                        | Lifecycle.Effect.Log(level, message) -> settings.Logger.Log(level, message)
                        | Lifecycle.Effect.Exit code -> exitCode <- Some code
            with error ->
                settings.Logger.LogCritical(error, "the library failed; this is a bug in Kcl.Core")
                exitCode <- Some ExitCode.InternalError

            stop.Cancel()

            stdinThread |> Option.iter (fun thread -> (thread :> IDisposable).Dispose())

            if not (isNull shardScope) then
                shardScope.Dispose()

            return exitCode.Value
        }
