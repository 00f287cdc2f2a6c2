(*
    One shard's child process, driven through the daemon-side session of Kcl.Core: the session decides what the
    real daemon would send, answer and find wrong; this file only does the I/O (pipes, bounded reads, the exit
    wait) and picks the next action from the shard's feed and the run's stop signals.
*)
namespace Kcl.Local

open System
open System.Diagnostics
open System.IO
open System.Text
open System.Threading
open System.Threading.Tasks
open Kcl.Core

/// How every shard of a run is driven.
type DriverSettings =
    {
        /// The child's program and arguments.
        Command: string list
        /// The directory the child starts in, and against which a relative program path is resolved.
        WorkingDirectory: string
        /// The largest batch.
        MaxRecords: int
        /// The wait between reads of a shard with nothing ready.
        IdleTimeBetweenReads: TimeSpan
        /// Send empty batches while the source has nothing ready.
        CallProcessRecordsEvenForEmptyRecordList: bool
        /// The limit on each wait for a child's line (`timeoutInSeconds`, or the local daemon's own bound).
        WaitLimit: TimeSpan
        /// How long a child may take to exit after its stdin is closed.
        ExitLimit: TimeSpan
        /// How the daemon side encodes its lines.
        Charset: Json.DaemonCharset
        /// Injected checkpoint failures, counted per shard.
        Faults: FaultRule list
        /// A pause before each batch (a slow stream).
        SlowBatch: TimeSpan
        /// Every Nth batch is delivered twice in a row, if set.
        DuplicateEvery: int option
        /// The lease is lost after this many batches on each shard, if set.
        LeaseLostAfter: int option
        /// What the shard's session keeps of its history.
        History: SessionHistory
        /// On Linux, gives the shard's thread a CPU of its own while at most half the CPUs are so taken, and starts the
        /// child on the others, so that the two never share one (`false`: both run wherever the system puts them).
        DedicatedCpus: bool
    }

    /// This child, started in `workingDirectory`, sent batches of at most `maxRecords` with no pause between reads,
    /// the local daemon's default bounds (5 minutes per wait, 10 seconds to exit), no faults, the latest history, and
    /// a CPU of its own for the shard's thread where one can be had.
    static member Create(command: string list, workingDirectory: string, maxRecords: int) =
        {
            Command = command
            WorkingDirectory = workingDirectory
            MaxRecords = maxRecords
            IdleTimeBetweenReads = TimeSpan.Zero
            CallProcessRecordsEvenForEmptyRecordList = false
            WaitLimit = TimeSpan.FromMinutes 5.0
            ExitLimit = TimeSpan.FromSeconds 10.0
            Charset = Json.DaemonCharset.Utf8
            Faults = []
            SlowBatch = TimeSpan.Zero
            DuplicateEvery = None
            LeaseLostAfter = None
            History = SessionHistory.Latest
            DedicatedCpus = true
        }

/// Where a shard starts.
type ShardStart =
    {
        /// The shard's records.
        Feed: ShardFeed
        /// The checkpoint `initialize` carries: the stored one or the initial position's sentinel.
        Checkpoint: string * int64
        /// The 0-based position of the first record to deliver.
        Position: int
        /// The position after the highest record a previous run delivered (redeliveries are those below it).
        PreviouslyDelivered: int
    }

/// How a shard's run ended.
[<RequireQualifiedAccess>]
type ShardEnding =
    /// `shardEnded` was answered.
    | ShardEnded
    /// `leaseLost` was answered (after a shutdown request, an injected lease loss or a ShutdownException).
    | LeaseLost
    /// The shard's lease was already at SHARD_END: no child was started.
    | AlreadyEnded
    /// The run stopped early: the daemon would have exited, the child could not start, or the run was killed.
    | Failed of reason: string

/// What one shard's run did.
type ShardResult =
    {
        /// The shard id.
        ShardId: string
        /// The session as the daemon saw it, if a child started.
        Session: DaemonSession.Session option
        /// Records delivered in this run, duplicates included.
        Delivered: int
        /// Distinct records of this run at or below the final checkpoint.
        Checkpointed: int
        /// Records delivered again: below a previous run's highest delivered, or in a duplicated batch.
        Redelivered: int
        /// Payload bytes delivered.
        Bytes: int64
        /// From the first `processRecords` to the child's exit: the steady state, without the child's start-up and
        /// `initialize`. Zero when no batch was sent.
        Streaming: TimeSpan
        /// How the run ended.
        Ending: ShardEnding
        /// The child's exit code, if it exited.
        ExitCode: int option
    }

/// Live figures of one shard, for progress displays; updated by the driver.
[<Sealed; AllowNullLiteral>]
type ShardProgress(shardId: string, total: int) =
    /// The shard id.
    member _.ShardId = shardId
    /// Records in the shard when the run started (more may arrive from stdin).
    member _.Total = total
    /// Records delivered so far.
    member val Delivered = 0 with get, set
    /// What the shard is doing, in a word or two.
    member val State = "starting" with get, set

/// What the driver tells the run as it goes.
type DriverHooks =
    {
        /// A checkpoint succeeded; the lease's checkpoint is now this.
        Checkpointed: string -> ExtendedSequenceNumber -> unit
        /// A batch up to this sequence number was delivered (written to the child).
        Delivering: string -> string -> unit
        /// A line the child wrote to stderr.
        ChildStderr: string -> string -> unit
    }

    /// Hooks that do nothing.
    static member Silent =
        {
            Checkpointed = fun _ _ -> ()
            Delivering = fun _ _ -> ()
            ChildStderr = fun _ _ -> ()
        }

/// A batch to send: its records, its action and the action's line, which may still be being written.
type private Batch =
    {
        /// The 0-based position of the first record.
        Position: int
        Records: Record[]
        Message: DaemonMessage
        /// The line, written into an array the driver reuses once the child has read past it.
        Writing: DaemonLine.LineWriting
    }

    /// The whole line, written now if it is not yet.
    member this.WholeLine() =
        this.Writing.Continue Int32.MaxValue |> ignore
        this.Writing.Line

/// A thread of its own for each shard's driver, on which every continuation of the driver runs: a child's line is
/// then taken by the thread that watched its pipe (`ChildLineReader`) and answered at once. On the thread pool the
/// driver's continuations woke a worker per line, and the pool's idle workers spun beside it on the cores the child
/// needs (bench/README.md, "Local daemon", "Thirteenth round").
[<RequireQualifiedAccess>]
module internal ShardThread =
    /// Runs the continuations posted to it, in order, on the thread that pumps it.
    [<Sealed>]
    type private Pump() =
        inherit SynchronizationContext()
        let queue = new Collections.Concurrent.BlockingCollection<struct (SendOrPostCallback * obj)>()

        override _.Post(callback, state) =
            let queued =
                try
                    queue.TryAdd(struct (callback, state))
                with :? InvalidOperationException ->
                    false

            // Work posted after the driver ended (the timer of a read it gave up on) runs on the thread pool.
            if not queued then
                ThreadPool.QueueUserWorkItem(fun _ -> callback.Invoke state) |> ignore

        override _.Send(_, _) =
            raise (NotSupportedException "a shard's thread takes posted work only")

        override this.CreateCopy() = this

        /// Starts the work on this thread, then runs what it posts until the task it returned has ended.
        member this.Run(work: unit -> Task<'T>) : Task<'T> =
            SynchronizationContext.SetSynchronizationContext this
            let task = work ()
            task.ContinueWith((fun (_: Task<'T>) -> queue.CompleteAdding()), TaskScheduler.Default) |> ignore

            for struct (callback, state) in queue.GetConsumingEnumerable() do
                callback.Invoke state

            task

    /// The driver's task, run on a new thread named for the shard.
    let run (shardId: string) (drive: unit -> Task<'T>) : Task<'T> =
        let result = TaskCompletionSource<'T>(TaskCreationOptions.RunContinuationsAsynchronously)

        let pump () =
            try
                let task = Pump().Run drive

                if task.IsCompletedSuccessfully then result.SetResult task.Result
                elif task.IsCanceled then result.SetCanceled()
                else result.SetException task.Exception.InnerExceptions
            with e ->
                result.SetException e

        Thread(pump, IsBackground = true, Name = "kcl-local " + shardId).Start()
        result.Task

/// Drives one shard's child.
[<RequireQualifiedAccess>]
module ShardDriver =
    let private delay (span: TimeSpan) (token: CancellationToken) =
        task {
            if span > TimeSpan.Zero then
                try
                    do! Task.Delay(span, token)
                with :? OperationCanceledException ->
                    ()
        }

    /// Runs one shard to its end with the child `launch` starts. `stop` asks for the graceful shutdown
    /// (`shutdownRequested`, then `leaseLost`); `kill` ends the child at once, as a daemon that dies would.
    let internal drive
        (launch: unit -> Result<ChildPipes, string>)
        (settings: DriverSettings)
        (hooks: DriverHooks)
        (progress: ShardProgress)
        (start: ShardStart)
        (stop: CancellationToken)
        (kill: CancellationToken)
        : Task<ShardResult> =
        task {
            let shardId = start.Feed.ShardId

            let result session ending exitCode delivered redelivered bytes cursor streaming =
                let checkpointed =
                    match session |> Option.bind (fun (s: DaemonSession.Session) -> s.Checkpoint) with
                    | Some position when position.IsShardEnd -> cursor - start.Position
                    | Some position when position.SequenceNumber.Sentinel.IsNone ->
                        max
                            0
                            (min cursor (start.Feed.PositionAfter position.SequenceNumber.Value)
                             - start.Position)
                    | _ -> 0

                {
                    ShardId = shardId
                    Session = session
                    Delivered = delivered
                    Checkpointed = checkpointed
                    Redelivered = redelivered
                    Bytes = bytes
                    Streaming = streaming
                    Ending = ending
                    ExitCode = exitCode
                }

            match launch () with
            | Error reason ->
                progress.State <- "failed"
                return result None (ShardEnding.Failed reason) None 0 0 0L start.Position TimeSpan.Zero
            | Ok child ->
                use child = child

                use killed =
                    kill.Register(fun () ->
                        try
                            child.Kill()
                        with _ ->
                            ())

                // Read on a thread of their own with blocking reads: the child's log lines are no work for the shard's
                // thread, and through the thread pool each line woke workers that then spun on the cores the child
                // needs (bench/README.md, "Local daemon", "Thirteenth round").
                let stderr =
                    let drained = TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)

                    let drain () =
                        try
                            let mutable line = child.Stderr.ReadLine()

                            while not (isNull line) do
                                hooks.ChildStderr shardId line
                                line <- child.Stderr.ReadLine()
                        with _ ->
                            ()

                        drained.SetResult()

                    Thread(drain, IsBackground = true, Name = "kcl-local stderr " + shardId).Start()
                    drained.Task

                let stdin = child.Stdin
                let reader = ChildLineReader child.Stdout

                let options =
                    { SessionOptions.Create(ShardId shardId) with
                        Charset = settings.Charset
                        Faults = settings.Faults
                        History = settings.History
                    }

                let mutable session = DaemonSession.create options
                let mutable cursor = start.Position
                let mutable delivered = 0
                let mutable redelivered = 0
                let mutable bytes = 0L
                let mutable batches = 0
                // The position and records of a batch to deliver again: its line is re-encoded, as its array is reused.
                let mutable duplicate: (int * Record[]) option = None
                let mutable idleDue = false
                let mutable shutdownSent = false
                let mutable playing = true
                // A Stopwatch timestamp, 0 until the first batch is written.
                let mutable streamingSince = 0L

                let exitCode () = child.ExitCode

                let fail failure =
                    session <- DaemonSession.recordDriverFailure failure session
                    playing <- false

                let write (bytes: ArraySegment<byte>) =
                    task {
                        try
                            do! stdin.WriteAsync(ReadOnlyMemory<byte>(bytes.Array, bytes.Offset, bytes.Count))
                            do! stdin.FlushAsync()
                            return true
                        with _ ->
                            return false
                    }

                // A batch's line, spliced into the pipe while the child reads it, with `whileFull` run whenever the
                // pipe is full; what the child made no room for within 100 ms is written after, while the driver
                // watches for the child's lines.
                let writeBatch (line: ArraySegment<byte>) whileFull =
                    let taken = ChildProcess.splice stdin line whileFull

                    if taken = line.Count then
                        Task.FromResult true
                    else
                        write (line.Slice taken)

                let childGone () =
                    task {
                        // The pipe broke or closed: give the process a moment to be reaped, for its exit code.
                        try
                            do! child.WaitForExitAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds 2.0)
                        with _ ->
                            ()

                        // A child the run killed itself is no finding about the child.
                        if kill.IsCancellationRequested then
                            playing <- false
                        else
                            fail (DriverFailure.ChildExited(exitCode ()))
                    }

                let sent result (message: DaemonMessage) (writeLine: unit -> Task<bool>) =
                    task {
                        match result with
                        | Ok next ->
                            session <- next

                            let! written = writeLine ()

                            if not written then
                                do! childGone ()
                        | Error reason ->
                            invalidOp (sprintf "%s: the local daemon cannot send %s: %s" shardId message.Action reason)
                    }

                let send message =
                    match DaemonSession.trySend message session with
                    | Ok(next, line) -> sent (Ok next) message (fun () -> write (ArraySegment line))
                    | Error reason -> sent (Error reason) message (fun () -> Task.FromResult true)

                // Batches' lines are reused: a new array for each (0.7 MB for 500 records of 1 KiB) was most of what
                // kcl-local allocated, and the C# sample ran at about 1.2x the records/s under kcl-local without it
                // (bench/ProcessBench, 5 runs). They are spliced into the child's pipe by reference, so an array is
                // free only once the child has read past it: when the child answers the batch after it. The driver
                // writes a batch only after the child has answered the last one, so the array of the batch before
                // last is free when a batch is written, and the next batch is encoded into it. Three arrays take
                // turns, on the pinned heap: the pipe holds their pages, which the GC must not move.
                let spliced = Collections.Generic.Queue<byte[]>()
                let mutable spare: byte[] = null

                // Lines differ a little in length from batch to batch (a partition key gains a digit), so a new array
                // has room to spare. At 10,000 records of 1 KiB, the first batch's array of the exact length was too
                // short for the fourth's line, and encoding into a new 15.6 MB array (fresh pages to fault in) took
                // about 10 ms against 4.3-4.9 ms for a reused one.
                let newLineArray length =
                    GC.AllocateUninitializedArray<byte>(length + length / 16, pinned = true)

                // The other two arrays of the three, made while the child starts (`prepare`).
                let prepared = Collections.Generic.Queue<byte[]>()

                let buffer length =
                    match spare with
                    | array when not (isNull array) && array.Length >= length ->
                        spare <- null
                        array
                    | _ when prepared.Count > 0 && prepared.Peek().Length >= length -> prepared.Dequeue()
                    | _ -> newLineArray length

                // Once the first batch is encoded, while the child starts, the arrays for the next two are made and
                // their pages touched, when a line is longer than the pipe: encoding 10,000 records of 1 KiB into an
                // array whose pages were all new took 10-14 ms against 3-5 ms into one used before.
                let prepare (first: ArraySegment<byte>) =
                    if first.Count > ChildProcess.pipeSize then
                        for _ in 1..2 do
                            let array = newLineArray first.Count

                            for page in 0 .. Environment.SystemPageSize .. array.Length - 1 do
                                array[page] <- 0uy

                            prepared.Enqueue array

                let batchOf position (records: Record[]) (remaining: int) =
                    // As a GetRecords response says it: how far behind the newest record the batch is when it is read.
                    let behind =
                        if remaining = 0 || records.Length = 0 then
                            0L
                        else
                            match (Array.last records).ApproximateArrivalTimestamp with
                            | Some arrival -> max 0L (int64 (DateTimeOffset.UtcNow - arrival).TotalMilliseconds)
                            | None -> 0L

                    let message = DaemonMessage.ProcessRecords(records, Some behind)

                    {
                        Position = position
                        Records = records
                        Message = message
                        Writing = DaemonSession.startEncoding buffer options message
                    }

                // The next batch, read and encoded while the child parses and processes the last one, so that its line
                // is ready when the status comes: the encoding (a quarter of kcl-local's time per record in a profile)
                // then overlaps the child's work instead of adding to it. On this thread: during the splice of a batch
                // longer than the pipe (`whileFull`), else right after the write. A thread-pool task for it cost a
                // thread wake-up per batch and was no faster. As with the real daemon's prefetching, the batch is read
                // before it is due; it is used only if it is still what a read now would give.
                let mutable ahead: Batch option = None

                // A quarter of the pipe: about 80 µs of encoding here, while the child takes 0.3-0.6 ms to empty a full
                // pipe, so the splice tops the pipe up long before it runs dry.
                let aheadSlice = ChildProcess.pipeSize / 4

                let readAhead position =
                    ahead <-
                        match start.Feed.Read(position, settings.MaxRecords) with
                        | FeedRead.Records(records, remaining) -> Some(batchOf position records remaining)
                        | FeedRead.Waiting
                        | FeedRead.Ended -> None

                // What the shard's thread does while a batch longer than the pipe waits for room: the next batch is
                // read and encoded a slice at a time, between the splice's pieces. At 10,000 records of 1 KiB the
                // encoding (3-5 ms) came after the splice, while the child, which decodes a batch as it arrives, waited
                // for its checkpoint's reply; on a thread of its own it slowed the child's reading ("Nineteenth
                // round").
                let whileFull (batch: Batch) again =
                    let mutable tried = false

                    fun () ->
                        if again || not playing then
                            false
                        else
                            match ahead with
                            | Some next when not next.Writing.Finished ->
                                next.Writing.Continue aheadSlice |> ignore
                                true
                            | Some _ -> false
                            | None when not tried ->
                                tried <- true
                                readAhead (batch.Position + batch.Records.Length)
                                true
                            | None -> false

                let deliver (batch: Batch) (again: bool) =
                    task {
                        if settings.SlowBatch > TimeSpan.Zero then
                            do! delay settings.SlowBatch stop

                        if streamingSince = 0L then
                            streamingSince <- Stopwatch.GetTimestamp()

                        // Before the splice, which may encode the next batch into the spare array.
                        spliced.Enqueue batch.Writing.Array

                        if spliced.Count > 2 then
                            spare <- spliced.Dequeue()

                        // Written before the session opens it: opening a batch folds over its records for the
                        // largest, about 15 µs of 500 records of 100 B that the child need not wait for.
                        match DaemonSession.canOpen batch.Message session with
                        | Error reason -> do! sent (Error reason) batch.Message (fun () -> Task.FromResult true)
                        | Ok() ->
                            let! written = writeBatch (batch.WholeLine()) (whileFull batch again)
                            let opened = DaemonSession.tryOpen batch.Message session
                            do! sent opened batch.Message (fun () -> Task.FromResult written)

                        // The bookkeeping waits until the child has the batch, so that it works while the child parses.
                        // The lease table saves in the background anyway, at most every 100 ms.
                        let records = batch.Records

                        if records.Length > 0 then
                            hooks.Delivering shardId (Array.last records).SequenceNumber.Value

                        delivered <- delivered + records.Length
                        bytes <- bytes + (records |> Array.sumBy (fun r -> int64 r.Data.Length))

                        if again then
                            redelivered <- redelivered + records.Length
                        else
                            redelivered <-
                                redelivered
                                + max 0 (min (cursor + records.Length) start.PreviouslyDelivered - cursor)

                            cursor <- cursor + records.Length
                            batches <- batches + 1

                        progress.Delivered <- delivered

                        // The next batch's line is whole before the child answers, whether or not the splice began it.
                        if not again && playing then
                            if ahead.IsNone then
                                readAhead cursor

                            ahead |> Option.iter (fun next -> next.WholeLine() |> ignore)
                    }

                // The batch read ahead if it starts at the cursor and is as full as a read now would be (more records
                // may have arrived since, from stdin or a Kinesis endpoint); otherwise what a read now finds.
                let read () =
                    let early = ahead
                    ahead <- None

                    match early with
                    | Some batch when
                        batch.Position = cursor
                        && (batch.Records.Length = settings.MaxRecords
                            || start.Feed.Count = cursor + batch.Records.Length)
                        ->
                        Choice1Of2 batch
                    | _ ->
                        // Never written, so free at once.
                        early |> Option.iter (fun stale -> spare <- stale.Writing.Array)

                        match start.Feed.Read(cursor, settings.MaxRecords) with
                        | FeedRead.Records(records, remaining) -> Choice1Of2(batchOf cursor records remaining)
                        | other -> Choice2Of2 other

                let nextAction () =
                    task {
                        if kill.IsCancellationRequested then
                            playing <- false
                        elif stop.IsCancellationRequested && not shutdownSent then
                            shutdownSent <- true
                            progress.State <- "shutting down"
                            do! send DaemonMessage.ShutdownRequested
                        elif shutdownSent then
                            do! send DaemonMessage.LeaseLost
                        elif settings.LeaseLostAfter |> Option.exists (fun n -> batches >= n) then
                            progress.State <- "lease lost"
                            do! send DaemonMessage.LeaseLost
                        else
                            match duplicate with
                            | Some(position, records) ->
                                duplicate <- None
                                do! deliver (batchOf position records 0) true
                            | None ->
                                if idleDue then
                                    idleDue <- false
                                    do! delay settings.IdleTimeBetweenReads stop

                                match read () with
                                | Choice1Of2 batch ->
                                    progress.State <- "reading"
                                    do! deliver batch false

                                    if settings.DuplicateEvery |> Option.exists (fun n -> batches % n = 0) then
                                        duplicate <- Some(batch.Position, batch.Records)
                                | Choice2Of2 FeedRead.Waiting ->
                                    progress.State <- "waiting"
                                    idleDue <- true

                                    if settings.CallProcessRecordsEvenForEmptyRecordList then
                                        do! send (DaemonMessage.ProcessRecords([||], Some 0L))
                                | Choice2Of2 _ ->
                                    progress.State <- "shard end"
                                    do! send DaemonMessage.ShardEnded
                    }

                let sequence, sub = start.Checkpoint

                do! send (DaemonMessage.Initialize(ShardId shardId, Some(SequenceNumber.parse sequence), Some sub))

                // The first batch is read and encoded while the child starts, as the real daemon's prefetching reads
                // records once it holds the lease, instead of after the child's answer: into a new array, whose pages
                // are faulted in for the first time, it took 15-19 ms at 10,000 records of 1 KiB.
                if playing then
                    readAhead cursor
                    ahead |> Option.iter (fun batch -> prepare (batch.WholeLine()))

                while playing do
                    match DaemonSession.nextStep session with
                    | Next.ReadLine ->
                        match! reader.ReadAsync(settings.WaitLimit, kill) with
                        | None when kill.IsCancellationRequested -> playing <- false
                        | None -> fail DriverFailure.TimedOut
                        | Some null -> do! childGone ()
                        | Some line ->
                            let before = session.Checkpoint
                            let next, outcome = DaemonSession.receive line session
                            session <- next

                            // Only a changed checkpoint is news to the lease table (a repeat of the same position
                            // is a silent success). Not `Checkpoints`: that list is rebuilt on every read.
                            let advanced = if session.Checkpoint <> before then session.Checkpoint else None
                            advanced |> Option.iter (hooks.Checkpointed shardId)

                            if outcome.ReplyBytes.Length > 0 then
                                let! replied = write (ArraySegment outcome.ReplyBytes)

                                if not replied then
                                    do! childGone ()

                            // Once the reply is on its way: no child of this run reads behind its checkpoint. Not
                            // past the cursor, where the rest of an aggregate under the same sequence number may wait.
                            match advanced with
                            | Some position when position.SequenceNumber.Sentinel.IsNone ->
                                start.Feed.Release(min cursor (start.Feed.PositionAfter position.SequenceNumber.Value))
                            | _ -> ()
                    | Next.SendAction ->
                        // The real daemon reads nothing between actions; a line already written now (a second
                        // status, a late checkpoint) is fed to the session with no action open, which names it.
                        match reader.TryReadWritten() with
                        | Some line -> session <- fst (DaemonSession.receive line session)
                        | None -> do! nextAction ()
                    | Next.SendLeaseLost ->
                        progress.State <- "lease lost"
                        do! send DaemonMessage.LeaseLost
                    | _ -> playing <- false

                try
                    stdin.Close()
                with _ ->
                    ()

                let! exited =
                    task {
                        try
                            do! child.WaitForExitAsync(kill).WaitAsync(settings.ExitLimit)
                            return true
                        with _ ->
                            return child.ExitCode.IsSome
                    }

                let streaming =
                    if streamingSince = 0L then
                        TimeSpan.Zero
                    else
                        Stopwatch.GetElapsedTime streamingSince

                if not exited && not kill.IsCancellationRequested && not session.DaemonExited then
                    session <- DaemonSession.recordDriverFailure DriverFailure.NoExitAfterEndOfInput session

                if not exited then
                    try
                        child.Kill()
                    with _ ->
                        ()

                // What the child wrote after the last action is drained as the daemon drains it.
                let mutable draining = exited

                while draining do
                    match! reader.ReadAsync(TimeSpan.FromSeconds 2.0, CancellationToken.None) with
                    | Some null
                    | None -> draining <- false
                    | Some line -> session <- fst (DaemonSession.receive line session)

                try
                    do! stderr.WaitAsync(TimeSpan.FromSeconds 2.0)
                with _ ->
                    ()

                let ending =
                    if kill.IsCancellationRequested then
                        ShardEnding.Failed "killed"
                    elif session.DaemonExited then
                        ShardEnding.Failed "the real daemon would have exited"
                    else
                        match session.Sent |> List.tryLast with
                        | Some DaemonMessage.ShardEnded -> ShardEnding.ShardEnded
                        | Some DaemonMessage.LeaseLost -> ShardEnding.LeaseLost
                        | _ -> ShardEnding.Failed "the session stopped early"

                progress.State <-
                    match ending with
                    | ShardEnding.ShardEnded -> "ended"
                    | ShardEnding.LeaseLost -> "lease lost"
                    | _ -> "failed"

                return result (Some session) ending (exitCode ()) delivered redelivered bytes cursor streaming
        }

    /// Runs one shard to its end with a child started from the settings' command. `stop` asks for the graceful
    /// shutdown (`shutdownRequested`, then `leaseLost`); `kill` ends the child at once, as a daemon that dies would.
    let run
        (settings: DriverSettings)
        (hooks: DriverHooks)
        (progress: ShardProgress)
        (start: ShardStart)
        (stop: CancellationToken)
        (kill: CancellationToken)
        : Task<ShardResult> =
        ShardThread.run start.Feed.ShardId (fun () ->
            let plan = CpuPlan.Shared
            let own = if settings.DedicatedCpus then plan.TryReserve() else None

            let launch () =
                let started () =
                    ChildProcess.start settings.WorkingDirectory settings.Command

                let child =
                    match own with
                    | Some cpu -> plan.StartOnOthers(cpu, started)
                    | None -> started ()

                Result.map ChildProcess.pipes child

            task {
                try
                    return! drive launch settings hooks progress start stop kill
                finally
                    own |> Option.iter plan.Release
            })
