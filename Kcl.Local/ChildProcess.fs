(*
    Starting a processor as the daemon does (PROTOCOL.md §1): the command from `executableName`, no shell, the
    daemon's working directory and environment, and the three standard streams as pipes.
*)
namespace Kcl.Local

#nowarn "9" // a pointer into a pinned array, for vmsplice

open System
open System.Diagnostics
open System.IO
open System.IO.Pipes
open System.Runtime.InteropServices
open System.Threading
open System.Threading.Tasks
open Microsoft.FSharp.NativeInterop

module private Native =
    [<DllImport("libc", SetLastError = true)>]
    extern int fcntl(int fd, int cmd, int arg)

    /// One piece of memory for vmsplice: `struct iovec`.
    [<Struct; StructLayout(LayoutKind.Sequential)>]
    type IoVec =
        val mutable Base: nativeint
        val mutable Length: unativeint

    [<DllImport("libc", SetLastError = true)>]
    extern nativeint vmsplice(int fd, IoVec& iov, unativeint count, uint32 flags)

    // A CPU mask (`cpu_set_t`) as bytes, bit n for CPU n. pid 0 is the calling thread.
    [<DllImport("libc", SetLastError = true)>]
    extern int sched_getaffinity(int pid, unativeint size, byte[] mask)

    [<DllImport("libc", SetLastError = true)>]
    extern int sched_setaffinity(int pid, unativeint size, byte[] mask)

/// Threads' CPU masks (Linux's sched_getaffinity and sched_setaffinity).
[<RequireQualifiedAccess>]
module internal CpuMask =
    let private maskBytes = 128

    let private toMask (cpus: int seq) =
        let mask = Array.zeroCreate<byte> maskBytes

        for cpu in cpus do
            mask[cpu / 8] <- mask[cpu / 8] ||| (1uy <<< cpu % 8)

        mask

    let private ofMask (mask: byte[]) =
        [| for cpu in 0 .. maskBytes * 8 - 1 do
               if mask[cpu / 8] &&& (1uy <<< cpu % 8) <> 0uy then
                   cpu |]

    /// The CPUs a thread (0: the calling one) or a process (its id: its main thread) may run on; none where the
    /// system cannot say (not Linux).
    let get (pid: int) =
        let mask = Array.zeroCreate<byte> maskBytes

        if OperatingSystem.IsLinux() && Native.sched_getaffinity (pid, unativeint maskBytes, mask) = 0 then
            ofMask mask
        else
            [||]

    /// Confines the calling thread to the CPUs; false where the system refused or cannot (not Linux).
    let confine (cpus: int[]) =
        OperatingSystem.IsLinux()
        && cpus.Length > 0
        && Native.sched_setaffinity (0, unativeint maskBytes, toMask cpus) = 0

/// Where shards' threads and their children run (Linux). A shard's thread spins while it watches its child's stdout,
/// and a pipe write wakes the child on the writer's CPU: on a machine of 2 vCPUs the two then often shared one while
/// the other idled, and the child's own short watch of stdin (Kcl.Core's `PipeWatch`) spun against the shard's thread
/// there. So a shard's thread gets a CPU of its own, while at most half of the CPUs are so taken, and its child starts
/// on the others (bench/README.md, "Local daemon", "Seventeenth round").
[<Sealed>]
type internal CpuPlan(allowed: int[]) =
    let reserved = Collections.Generic.SortedSet<int>()

    static let shared = lazy (CpuPlan(CpuMask.get Environment.ProcessId))

    /// The plan over the CPUs this process may run on (taskset and cpusets respected), shared by its shards.
    static member Shared = shared.Force()

    /// A CPU of its own for a shard's thread: the first allowed one not taken, while at most half are taken.
    member _.TryReserve() : int option =
        lock reserved (fun () ->
            if allowed.Length < 2 || (reserved.Count + 1) * 2 > allowed.Length then
                None
            else
                let cpu = allowed |> Array.find (fun cpu -> not (reserved.Contains cpu))
                reserved.Add cpu |> ignore
                Some cpu)

    /// Gives a CPU back when its shard has ended.
    member _.Release(cpu: int) =
        lock reserved (fun () -> reserved.Remove cpu |> ignore)

    /// The allowed CPUs that no shard's thread has taken: where children run.
    member _.ForChildren() =
        lock reserved (fun () -> allowed |> Array.filter (fun cpu -> not (reserved.Contains cpu)))

    /// Starts a child from the calling thread, on the CPUs no shard's thread has taken (a process starts with the CPU
    /// mask of the thread that starts it, so all the child's threads keep off them), then moves the calling thread
    /// to its own CPU.
    member this.StartOnOthers(own: int, start: unit -> 'T) : 'T =
        CpuMask.confine (this.ForChildren()) |> ignore

        try
            start ()
        finally
            CpuMask.confine [| own |] |> ignore

/// A stream that reads forward only: what such a stream must still answer, for a child's stdout and stderr.
[<AbstractClass>]
type internal ReadOnlyStream() =
    inherit Stream()

    override _.CanRead = true
    override _.CanSeek = false
    override _.CanWrite = false
    override _.Length = raise (NotSupportedException())

    override _.Position
        with get () = raise (NotSupportedException())
        and set _ = raise (NotSupportedException())

    override _.Flush() = ()
    override _.Seek(_, _) = raise (NotSupportedException())
    override _.SetLength _ = raise (NotSupportedException())
    override _.Write(_: byte[], _: int, _: int) = raise (NotSupportedException())

/// A child's stdout that can be watched: polled without waiting, between spins and yields, until it has bytes. A line
/// taken by the thread that watched for it costs no wake-up, where a read through the runtime's socket engine wakes its
/// event thread and then a thread-pool thread, each perhaps on a halted core: 30-75 µs each on this project's 2-core
/// virtual machine (bench/README.md, "Local daemon", "Twelfth round"). Linux only; elsewhere nothing is watched.
[<Sealed>]
type internal WatchedPipe(pipe: PipeStream) =
    inherit ReadOnlyStream()

    // At most half the cores' worth of children are watched at once, so that watching leaves most cores to children.
    static let maxWatching = max 1 (Environment.ProcessorCount / 2)
    static let mutable watching = 0

    let fd = int (pipe.SafePipeHandle.DangerousGetHandle())

    // A read that has to wait is made by a thread of this pipe's own, blocked in read(2). Through the runtime, the
    // first such read would register the pipe with its socket engine for good, and from then on every line the child
    // writes would wake the engine's thread and a thread-pool worker, which then spin on the cores the child needs
    // (bench/README.md, "Local daemon", "Fourteenth round").
    let requested = new SemaphoreSlim(0)
    let mutable request = Memory<byte>.Empty
    let mutable completion: TaskCompletionSource<int> = null
    let mutable waiter: Thread = null
    let mutable closed = false

    let serve () =
        requested.Wait()

        while not (Volatile.Read &closed) do
            let reading = completion

            let read =
                try
                    Ok(pipe.Read request.Span)
                with error ->
                    Error error

            // Cleared first: the reader's continuation may run right here, inside SetResult, and ask for the next read.
            completion <- null

            match read with
            | Ok count -> reading.SetResult count
            | Error error -> reading.SetException error

            requested.Wait()

        match completion with
        | null -> ()
        | reading -> reading.TrySetException(ObjectDisposedException "the child's stdout") |> ignore

    /// A read on this pipe's own thread, where one is not already waiting.
    let waitForBytes (buffer: Memory<byte>) =
        if not (isNull completion) then
            invalidOp "a read of the child's stdout is already waiting"

        // Continuations run on the thread that read, so a line wakes one thread: the driver's, through its context.
        let reading = TaskCompletionSource<int>()
        request <- buffer
        completion <- reading

        if isNull waiter then
            waiter <- Thread(serve, IsBackground = true, Name = "kcl-local stdout")
            waiter.Start()

        requested.Release() |> ignore
        reading.Task

    let ready timeout =
        Kcl.Core.Poll.readable fd timeout

    /// True when the pipe holds bytes or has ended now.
    member _.HasBytes() = OperatingSystem.IsLinux() && ready 0

    /// Watches the pipe for up to `limit`: true once it holds bytes or has ended, false when the limit passed or the
    /// watch was not taken up (other children watched, or not Linux).
    member _.Watch(limit: TimeSpan) =
        if not (OperatingSystem.IsLinux()) then
            false
        elif Interlocked.Increment(&watching) > maxWatching then
            Interlocked.Decrement(&watching) |> ignore
            false
        else
            try
                let until = Stopwatch.GetTimestamp() + int64 (limit.TotalSeconds * float Stopwatch.Frequency)
                let mutable found = ready 0
                let mutable round = 0

                while not found && Stopwatch.GetTimestamp() < until do
                    round <- round + 1

                    // Mostly spins, to keep the core awake for the child's line; a yield now and then lets any other
                    // thread that wants the core have it.
                    if round % 8 = 0 then Thread.Yield() |> ignore else Thread.SpinWait 20

                    found <- ready 0

                found
            finally
                Interlocked.Decrement(&watching) |> ignore

    override _.Read(buffer: byte[], offset: int, count: int) = pipe.Read(buffer, offset, count)
    override _.Read(buffer: Span<byte>) = pipe.Read buffer

    /// Off Windows, a read on a thread of the pipe's own; a read already waiting is not cancelled by the token.
    override _.ReadAsync(buffer: Memory<byte>, token: CancellationToken) =
        if OperatingSystem.IsWindows() then pipe.ReadAsync(buffer, token)
        elif token.IsCancellationRequested then ValueTask<int>(Task.FromCanceled<int> token)
        else ValueTask<int>(waitForBytes buffer)

    override this.ReadAsync(buffer: byte[], offset: int, count: int, token: CancellationToken) =
        this.ReadAsync(Memory<byte>(buffer, offset, count), token).AsTask()

    override _.Dispose(disposing: bool) =
        if disposing then
            // A read still waiting ends when the child's end closes; its thread then sees this and stops.
            Volatile.Write(&closed, true)
            requested.Release() |> ignore
            pipe.Dispose()

        base.Dispose disposing

/// A child's stderr, read at most once a pause: the child's log lines gather in the pipe meanwhile, and one read takes
/// them all. Read as they came, each line woke the reading thread, on the core the child had just written from, once a
/// batch for a child that logs a line a batch (bench/README.md, "Local daemon", "Fourteenth round").
[<Sealed>]
type internal PacedReads(inner: Stream, pause: TimeSpan) =
    inherit ReadOnlyStream()
    let mutable lastCount = 0

    /// Waits out the pause after a read that found bytes, then reads; a quiet child is waited for in the read itself.
    override _.Read(buffer: byte[], offset: int, count: int) =
        if lastCount > 0 then
            Thread.Sleep pause

        lastCount <- inner.Read(buffer, offset, count)
        lastCount

    override _.Dispose(disposing: bool) =
        if disposing then
            inner.Dispose()

        base.Dispose disposing

/// Reads a child's lines as the daemon's `BufferedReader.readLine` splits them ("\n", "\r" or "\r\n" ends one, and a
/// last line without an end counts), decoded as UTF-8 with a BOM kept, which makes the line unparseable as it does for
/// the daemon. A read that outlives its bound is awaited again rather than overlapped, as in the test kit. Its own
/// buffer, not a `StreamReader`'s, so that it can tell whether a line is here without starting a read: a read left
/// waiting would take the child's next line with a thread's wake-up, not a watch.
[<Sealed>]
type internal ChildLineReader(stream: Stream) =
    // A line that comes this soon is watched for (`WatchedPipe`); under the protocol, a child's next line after a small
    // batch or a checkpoint's reply comes within microseconds to about a millisecond.
    static let watchLimit = TimeSpan.FromMilliseconds 2.0
    static let watchTicks = int64 (watchLimit.TotalSeconds * float Stopwatch.Frequency)

    let mutable buffer: byte[] = Array.zeroCreate 4096
    let mutable start = 0
    let mutable fill = 0
    let mutable ended = false
    // The last line ended with a "\r" at the end of the bytes read so far: a "\n" after it belongs to it.
    let mutable afterReturn = false
    let mutable pending: Task<int> = null
    // How long the child's bytes took to come for the last reads, in Stopwatch ticks. The pipe is watched only while
    // each came within the watch limit: a child that takes longer (large batches, slow work) costs no spinning.
    let recentWaits = Array.zeroCreate<int64> 4
    let mutable waits = 0
    let mutable askedAt = 0L

    /// A whole line from the buffer; `ValueSome null` at the end of input; `ValueNone` when more bytes are needed.
    let take () =
        if afterReturn && start < fill then
            afterReturn <- false

            if buffer[start] = 10uy then
                start <- start + 1

        let length = buffer.AsSpan(start, fill - start).IndexOfAny(13uy, 10uy)

        if length >= 0 then
            let line = Text.Encoding.UTF8.GetString(buffer, start, length)
            let stop = start + length
            start <- stop + 1

            if buffer[stop] = 13uy then
                if start < fill then
                    if buffer[start] = 10uy then
                        start <- start + 1
                else
                    afterReturn <- true

            ValueSome line
        elif not ended then
            ValueNone
        elif fill > start then
            let line = Text.Encoding.UTF8.GetString(buffer, start, fill - start)
            start <- fill
            ValueSome line
        else
            ValueSome null

    /// Room after `fill` for a read: the bytes kept move to the front, and the buffer doubles when full.
    let room () =
        if start > 0 then
            Buffer.BlockCopy(buffer, start, buffer, 0, fill - start)
            fill <- fill - start
            start <- 0

        if fill = buffer.Length then
            Array.Resize(&buffer, buffer.Length * 2)

        Memory<byte>(buffer, fill, buffer.Length - fill)

    let absorb count =
        recentWaits[waits % recentWaits.Length] <- Stopwatch.GetTimestamp() - askedAt
        waits <- waits + 1

        if count = 0 then ended <- true else fill <- fill + count

    /// What the pipe holds, read on this thread: it has bytes or has ended, so the read returns at once.
    let readNow (pipe: WatchedPipe) = absorb (pipe.Read((room ()).Span))

    let startPending () =
        pending <- stream.ReadAsync(room ()).AsTask()

    /// A read of what the pipe holds: at once when it has bytes now or once watched for them, else a pending read.
    let startRead () =
        askedAt <- Stopwatch.GetTimestamp()

        match stream with
        | :? WatchedPipe as pipe when
            pipe.HasBytes()
            || (Array.forall (fun wait -> wait <= watchTicks) recentWaits && pipe.Watch watchLimit)
            ->
            readNow pipe
        | _ -> startPending ()

    /// The next line; `Some null` at the end of input; `None` when none came within `limit` or the token was cancelled.
    member _.ReadAsync(limit: TimeSpan, token: CancellationToken) : Task<string option> =
        task {
            let mutable result = None
            let mutable reading = true

            while reading do
                match take () with
                | ValueSome line ->
                    result <- Some line
                    reading <- false
                | ValueNone ->
                    if isNull pending then
                        startRead ()

                    if not (isNull pending) then
                        try
                            let! count = pending.WaitAsync(limit, token)
                            pending <- null
                            absorb count
                        with
                        | :? TimeoutException
                        | :? OperationCanceledException -> reading <- false

            return result
        }

    /// A line the child has already written, without waiting; end of input is left for `ReadAsync`.
    member _.TryReadWritten() : string option =
        let line () =
            match take () with
            | ValueSome line when not (isNull line) -> Some line
            | _ -> None

        match line () with
        | Some line -> Some line
        | None when ended -> None
        | None ->
            if isNull pending then
                askedAt <- Stopwatch.GetTimestamp()

                match stream with
                | :? WatchedPipe as pipe when OperatingSystem.IsLinux() ->
                    if pipe.HasBytes() then
                        readNow pipe
                | _ -> startPending ()

            if not (isNull pending) && pending.IsCompletedSuccessfully then
                absorb pending.Result
                pending <- null

            line ()

/// A started child as its driver uses it: its three standard streams and its exit.
type internal ChildPipes =
    inherit IDisposable
    /// Writes to the child's stdin.
    abstract Stdin: Stream
    /// Reads the child's stdout.
    abstract Stdout: Stream
    /// Reads the child's stderr as text.
    abstract Stderr: StreamReader
    /// The exit code, once the child has exited.
    abstract ExitCode: int option
    /// Completes when the child has exited, or faults when the token is cancelled.
    abstract WaitForExitAsync: CancellationToken -> Task
    /// Ends the child and its descendants at once.
    abstract Kill: unit -> unit

/// Starting child processes.
[<RequireQualifiedAccess>]
module ChildProcess =
    let private isExecutableFile (path: string) =
        File.Exists path
        && (OperatingSystem.IsWindows()
            || (File.GetUnixFileMode path
                &&& (UnixFileMode.UserExecute
                     ||| UnixFileMode.GroupExecute
                     ||| UnixFileMode.OtherExecute))
               <> UnixFileMode.None)

    // F_SETPIPE_SZ (Linux): a pipe's capacity. The default 64 KiB takes a 500-record batch of 1 KiB records (about
    // 0.7 MB) in a dozen writes, each waiting for the child to read and each an epoll wake-up and a thread hop here;
    // at 1 MiB (the unprivileged limit, /proc/sys/fs/pipe-max-size) such a batch goes in one write while the child
    // reads. A refusal only leaves the default.
    let private setPipeSize = 1031

    /// The capacity a child's stdin pipe is widened to, at most.
    let internal pipeSize = 1 <<< 20

    // Only so many live children get the wide pipe: past the per-user soft limit (/proc/sys/fs/pipe-user-pages-soft,
    // 64 MiB by default) Linux gives every new pipe of the user, in any program, the smallest size.
    let private widePipeLimit = 16
    let private widePipes = ref 0

    let private widen (child: Process) =
        match child.StandardInput.BaseStream with
        | :? PipeStream as pipe when OperatingSystem.IsLinux() ->
            if Threading.Interlocked.Increment &widePipes.contents <= widePipeLimit then
                child.Exited.Add(fun _ -> Threading.Interlocked.Decrement &widePipes.contents |> ignore)
                child.EnableRaisingEvents <- true
                Native.fcntl (int (pipe.SafePipeHandle.DangerousGetHandle()), setPipeSize, pipeSize) |> ignore
            else
                Threading.Interlocked.Decrement &widePipes.contents |> ignore
        | _ -> ()

    // SPLICE_F_NONBLOCK: take what the pipe has room for now, never wait for the child to read.
    let private spliceNonBlocking = 2u

    // EAGAIN (Linux): the pipe is full.
    let private tryAgain = 11

    // How long a splice waits at most for the child to make room, before it leaves the rest to the caller.
    let private roomWait = 100

    /// Puts the segment into a pipe by reference (Linux `vmsplice`), waiting for room while the child reads, and
    /// returns how many bytes went: fewer when the child made no room for 100 ms or the pipe broke, and 0 on other
    /// systems and for other streams, leaving the caller to write the rest. Copying a 0.7 MB batch into the pipe took
    /// about 15% of kcl-local's CPU time in a profile, and it lay between a child's status and its next batch; the rest
    /// of a batch larger than the pipe (13.4 MB at 10,000 records of 1 KiB) went through a thread-pool write, whose
    /// workers then spun beside the shard's thread. The pipe holds the array's pages, not a copy, until the child has
    /// read them, so the array must be on the pinned heap and must not change until the child has read past them.
    /// While the pipe is full, `whileFull` is called for a short piece of other work; once it returns false, having
    /// none left, the splice waits in `poll`.
    let internal splice (stdin: Stream) (bytes: ArraySegment<byte>) (whileFull: unit -> bool) : int =
        match stdin with
        | :? PipeStream as pipe when OperatingSystem.IsLinux() && bytes.Count > 0 ->
            use start = fixed &bytes.Array[bytes.Offset]
            let fd = int (pipe.SafePipeHandle.DangerousGetHandle())
            let mutable put = 0
            let mutable going = true

            while going && put < bytes.Count do
                let mutable piece = Native.IoVec()
                piece.Base <- NativePtr.toNativeInt start + nativeint put
                piece.Length <- unativeint (bytes.Count - put)
                let spliced = int (Native.vmsplice (fd, &piece, 1un, spliceNonBlocking))

                if spliced > 0 then
                    put <- put + spliced
                elif Marshal.GetLastPInvokeError() = tryAgain && whileFull () then
                    ()
                else
                    // Full (EAGAIN) or broken: wait for room, and stop if none comes or the child is gone.
                    going <- Kcl.Core.Poll.writable fd roomWait

            put
        | _ -> 0

    // Log lines reach kcl-local's own log this much later at most; a child that writes more than its stderr pipe holds
    // in this time (64 KiB by default) waits for the next read.
    let private stderrPause = TimeSpan.FromMilliseconds 10.0

    /// A started process as its driver uses it.
    let internal pipes (child: Process) =
        let stdout =
            match child.StandardOutput.BaseStream with
            | :? PipeStream as pipe -> new WatchedPipe(pipe) :> Stream
            | other -> other

        let stderr =
            new StreamReader(
                new PacedReads(child.StandardError.BaseStream, stderrPause),
                child.StandardError.CurrentEncoding,
                true,
                65536
            )

        { new ChildPipes with
            member _.Stdin = child.StandardInput.BaseStream
            member _.Stdout = stdout
            member _.Stderr = stderr
            member _.ExitCode = if child.HasExited then Some child.ExitCode else None
            member _.WaitForExitAsync token = child.WaitForExitAsync token
            member _.Kill() = child.Kill true
            member _.Dispose() =
                // The stdout's own reading thread ends with it.
                stdout.Dispose()
                stderr.Dispose()
                child.Dispose()
        }

    /// The file a program name names, as `ProcessBuilder` finds it: a name with a directory separator is a path
    /// relative to the working directory; a bare name is looked up on PATH. `None` when nothing fits.
    let resolve (workingDirectory: string) (program: string) : string option =
        if program.Contains '/' || program.Contains Path.DirectorySeparatorChar then
            let full = Path.GetFullPath(Path.Combine(workingDirectory, program))
            if File.Exists full then Some full else None
        else
            let path =
                Environment.GetEnvironmentVariable "PATH"
                |> Option.ofObj
                |> Option.defaultValue ""

            let extensions =
                if OperatingSystem.IsWindows() then
                    [ ""; ".exe"; ".cmd"; ".bat" ]
                else
                    [ "" ]

            path.Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            |> Seq.collect (fun dir -> extensions |> Seq.map (fun ext -> Path.Combine(dir, program + ext)))
            |> Seq.tryFind isExecutableFile

    /// Starts the command with redirected standard streams, or says why it cannot (the daemon's "Failed to start
    /// client executable").
    let start (workingDirectory: string) (command: string list) : Result<Process, string> =
        match command with
        | [] -> Error "Failed to start client executable: the command is empty"
        | program :: arguments ->
            match resolve workingDirectory program with
            | None ->
                Error(
                    sprintf
                        "Failed to start client executable: %s was not found (relative to %s, or on PATH)"
                        program
                        workingDirectory
                )
            | Some file ->
                let info =
                    ProcessStartInfo(
                        file,
                        WorkingDirectory = workingDirectory,
                        UseShellExecute = false,
                        RedirectStandardInput = true,
                        RedirectStandardOutput = true,
                        RedirectStandardError = true
                    )

                for argument in arguments do
                    info.ArgumentList.Add argument

                try
                    let child = Process.Start info
                    widen child
                    Ok child
                with e ->
                    Error(sprintf "Failed to start client executable %s: %s" file e.Message)
