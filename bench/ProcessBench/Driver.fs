/// A daemon stand-in that costs next to nothing: it splices pre-encoded lines into the pipe and, for each line the
/// child writes, only looks for "checkpoint" or "status" in it. It feeds the stream in one of two ways (`Feed`).
module ProcessBench.Driver

#nowarn "9" // the address of a pinned line, for vmsplice

open System
open System.Diagnostics
open System.IO
open System.Runtime.InteropServices
open ProcessBench.Workload

type Child =
    {
        Name: string
        File: string
        Arguments: string list
        /// Variables set for the child only, e.g. a runtime setting to compare.
        Environment: (string * string) list
    }

/// How the stand-in feeds a workload's batches to the child. Both start the same way: `initialize`, then its status,
/// which ends the start-up time.
type Feed =
    /// As the real daemon: a checkpoint is answered when the child asks, and the next batch goes only after the status
    /// of the last. Each batch costs four hand-offs between the two processes, paid by every child alike.
    | LockStep
    /// The pre-generated stream at once: each batch followed by the reply to its checkpoint, placed where the child
    /// will read it, written as fast as the pipe takes them. No hand-off per batch, so the daemon side costs nothing
    /// (issue 6's "pre-generated stream"). Needs a child that checkpoints exactly once per batch and at the shard's
    /// end, which the run checks.
    | Streamed

    member this.Name =
        match this with
        | LockStep -> "lock-step"
        | Streamed -> "streamed"

type Measurement =
    {
        Child: string
        Workload: string
        Feed: Feed
        Records: int
        Seconds: float
        CpuSeconds: float
        PeakRssMiB: float
        StartupMs: float
        /// The child's CPU time over the second half of the stream's records, read from /proc at the status of the
        /// middle batch and of the last: the steady state within one process, without start-up or exit.
        SecondHalfCpuSeconds: float
        SecondHalfRecords: int
        /// The wall time over the same second half: records/s in the steady state, without the warm-up of a child's
        /// first batches or its exit.
        SecondHalfSeconds: float
    }

    member this.RecordsPerSecond = float this.Records / this.Seconds

    member this.SecondHalfRecordsPerSecond =
        float this.SecondHalfRecords / this.SecondHalfSeconds

/// The CPU time a child of GNU time has used so far, all its threads, exited ones included (/proc/<pid>/stat, in
/// clock ticks of 10 ms: about 3% of a 100,000-record half); NaN once the child has exited, which a streamed child
/// may do before its last status is read.
let private childCpuSeconds (timePid: int) =
    try
        let pid =
            File.ReadAllText(sprintf "/proc/%d/task/%d/children" timePid timePid).Trim()

        if pid = "" then
            nan
        else
            let stat = File.ReadAllText(sprintf "/proc/%s/stat" (pid.Split(' ')[0]))
            // The fields after the command's closing parenthesis start at the third, the state; utime and stime are
            // the 14th and 15th.
            let fields = stat.Substring(stat.LastIndexOf ')' + 2).Split ' '
            (float fields[11] + float fields[12]) / 100.0
    with :? IOException ->
        nan

/// vmsplice(2), Linux.
module private Native =
    /// One piece of memory for vmsplice: `struct iovec`.
    [<Struct; StructLayout(LayoutKind.Sequential)>]
    type IoVec =
        val mutable Base: nativeint
        val mutable Length: unativeint

    [<DllImport("libc", SetLastError = true)>]
    extern nativeint vmsplice(int fd, IoVec& iov, unativeint count, uint32 flags)

// EINTR: a signal (the runtime sends some to its own threads) interrupted the call before it took anything.
let private interrupted = 4

/// Writes a line the workload made (pinned, never changed) into the child's stdin. On Linux the pipe takes the line's
/// pages by reference (vmsplice) instead of copying them: with write(2), the copy kept even a child that decodes nothing
/// (bench/NullChild) at 4.8x Node's records/s at 100 B, and with vmsplice it reached 7.7x (bench/README.md, "Nineteenth
/// round").
let private put (stdin: Stream) (line: byte[]) =
    match stdin with
    | :? Pipes.PipeStream as pipe when OperatingSystem.IsLinux() && line.Length > 0 ->
        let fd = int (pipe.SafePipeHandle.DangerousGetHandle())
        use start = fixed line
        let mutable put = 0

        while put < line.Length do
            let mutable piece = Native.IoVec()
            piece.Base <- NativeInterop.NativePtr.toNativeInt start + nativeint put
            piece.Length <- unativeint (line.Length - put)
            let spliced = int (Native.vmsplice (fd, &piece, 1un, 0u))

            if spliced > 0 then
                put <- put + spliced
            elif Marshal.GetLastPInvokeError() <> interrupted then
                let error = Marshal.GetLastPInvokeError()
                raise (IOException(sprintf "vmsplice into the child's stdin failed: errno %d" error))
    | _ -> stdin.Write line

let private statusWord = ReadOnlyMemory<byte>("\"status\""B)
let private checkpointWord = ReadOnlyMemory<byte>("\"checkpoint\""B)

let private contains (line: ReadOnlySpan<byte>) (word: ReadOnlyMemory<byte>) = line.IndexOf word.Span >= 0

/// Reads the child's stdout line by line from a buffer of its own.
type private Lines(stream: Stream) =
    let mutable buffer: byte[] = Array.zeroCreate 65536
    let mutable start = 0
    let mutable finish = 0

    member _.Next() : ReadOnlyMemory<byte> =
        let mutable result = ReadOnlyMemory<byte>.Empty
        let mutable found = false

        while not found do
            let newline = Array.IndexOf(buffer, 10uy, start, finish - start)

            if newline >= 0 then
                result <- ReadOnlyMemory<byte>(buffer, start, newline - start)
                start <- newline + 1
                found <- true
            else
                if start > 0 then
                    Buffer.BlockCopy(buffer, start, buffer, 0, finish - start)
                    finish <- finish - start
                    start <- 0

                if finish = buffer.Length then Array.Resize(&buffer, buffer.Length * 2)
                let read = stream.Read(buffer, finish, buffer.Length - finish)
                if read = 0 then failwith "the child closed its stdout in the middle of the run"
                finish <- finish + read

        result

/// Answers checkpoints until the status comes.
let private untilStatus (lines: Lines) (stdin: Stream) (reply: byte[]) =
    let mutable waiting = true

    while waiting do
        let line = lines.Next().Span

        if contains line statusWord then waiting <- false
        elif contains line checkpointWord then
            stdin.Write reply
            stdin.Flush()

/// Counts the child's checkpoints and statuses until `statuses` statuses have come; `atStatus` is called with each
/// status's number, from 1.
let private countUntil (lines: Lines) (statuses: int) (atStatus: int -> unit) =
    let mutable seen = 0
    let mutable checkpoints = 0

    while seen < statuses do
        let line = lines.Next().Span

        if contains line statusWord then
            seen <- seen + 1
            atStatus seen
        elif contains line checkpointWord then
            checkpoints <- checkpoints + 1

    checkpoints

/// Runs one child over the workload under GNU time, which reports its CPU time and peak RSS.
let run (feed: Feed) (child: Child) (workload: Workload) =
    let timeFile = Path.GetTempFileName()

    let info =
        ProcessStartInfo(
            "/usr/bin/time",
            [ "-f"; "%U %S %M"; "-o"; timeFile; child.File ] @ child.Arguments,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false
        )

    for name, value in child.Environment do
        info.Environment[name] <- value

    let clock = Stopwatch.StartNew()
    use proc = Process.Start info
    // Drained and dropped on a thread of its own, with no line splitting: the samples log a line per batch, and
    // reading those as lines cost the stand-in more CPU than all the rest of its work.
    Threading.Thread(
        (fun () ->
            let stderr = proc.StandardError.BaseStream
            let buffer = Array.zeroCreate<byte> 65536

            try
                while stderr.Read(buffer, 0, buffer.Length) > 0 do
                    ()
            with :? IOException ->
                ()),
        IsBackground = true
    )
        .Start()

    let stdin = proc.StandardInput.BaseStream
    let lines = Lines proc.StandardOutput.BaseStream
    stdin.Write workload.Initialize
    stdin.Flush()
    untilStatus lines stdin workload.Reply
    let startup = clock.Elapsed.TotalMilliseconds
    let steady = Stopwatch.StartNew()

    let batches = workload.Batches.Length
    let middle = batches / 2
    let mutable cpuAtMiddle = 0.0
    let mutable secondHalfCpu = 0.0
    let mutable timeAtMiddle = TimeSpan.Zero
    let mutable secondHalf = TimeSpan.Zero

    // The second half runs from the middle batch's start to the last batch's status, whichever the feed.
    let markMiddle () =
        timeAtMiddle <- steady.Elapsed
        cpuAtMiddle <- childCpuSeconds proc.Id

    let markEnd () =
        secondHalf <- steady.Elapsed - timeAtMiddle
        secondHalfCpu <- childCpuSeconds proc.Id - cpuAtMiddle

    match feed with
    | LockStep ->
        for index, batch in Array.indexed workload.Batches do
            if index = middle then
                markMiddle ()

            put stdin batch
            untilStatus lines stdin workload.Reply

        markEnd ()
        stdin.Write workload.ShardEnded
        stdin.Flush()
        untilStatus lines stdin workload.Reply
        stdin.Close()
    | Streamed ->
        if middle = 0 then
            markMiddle ()

        // Written on a thread of its own while this one reads what the child writes, so that neither waits on the
        // other: a child blocked on a full stdout is drained while its stdin is still being filled.
        let writer =
            Threading.Thread(fun () ->
                try
                    for batch in workload.Batches do
                        put stdin batch
                        stdin.Write workload.Reply

                    stdin.Write workload.ShardEnded
                    stdin.Write workload.Reply
                    stdin.Close()
                with :? IOException ->
                    // The child is gone; the count of its statuses below says so.
                    ())

        writer.Start()

        // The statuses for the batches, then for shardEnded; the CPU time is read at the same points as lock-step.
        let checkpoints =
            try
                countUntil lines (batches + 1) (fun seen ->
                    if seen = middle && middle > 0 then markMiddle ()
                    elif seen = batches then markEnd ())
            finally
                writer.Join()

        if checkpoints <> batches + 1 then
            failwithf
                "%s checkpointed %d times over %d batches and the shard's end; the streamed feed places one reply each"
                child.Name
                checkpoints
                batches

    proc.WaitForExit()
    let seconds = steady.Elapsed.TotalSeconds

    if proc.ExitCode <> 0 then
        failwithf "%s exited with %d on %s" child.Name proc.ExitCode workload.Name

    let fields = (File.ReadAllLines timeFile |> Array.last).Split ' '
    File.Delete timeFile

    {
        Child = child.Name
        Workload = workload.Name
        Feed = feed
        Records = workload.Records
        Seconds = seconds
        CpuSeconds = float fields[0] + float fields[1]
        PeakRssMiB = float fields[2] / 1024.0
        StartupMs = startup
        SecondHalfCpuSeconds = secondHalfCpu
        SecondHalfRecords = workload.Records - middle * workload.BatchSize
        SecondHalfSeconds = secondHalf.TotalSeconds
    }

/// One run of a child under kcl-local, as its JSON summary reports it.
type LocalMeasurement =
    {
        Child: string
        Records: int
        /// From the first batch to the child's exit (kcl-local's `streamingSeconds`): the steady state.
        Seconds: float
        /// The whole kcl-local process: generating the stream, the child's start-up, and the steady state.
        WallSeconds: float
    }

    member this.RecordsPerSecond = float this.Records / this.Seconds

/// Runs a child under kcl-local (`dotnet <kclLocal>`) over one shard of `records` generated records of
/// `recordSize` bytes in batches of `batchSize`, with fresh leases, and reads the steady state from its summary.
let runLocal (kclLocal: string) (child: Child) (recordSize: int) (batchSize: int) (records: int) =
    let dir = Directory.CreateTempSubdirectory "kcl-bench-local-"

    try
        let properties = Path.Combine(dir.FullName, "bench.properties")

        // The child's arguments are not passed: executableName is split on spaces, and the samples take none.
        File.WriteAllLines(
            properties,
            [
                "executableName = " + child.File
                "streamName = bench"
                "applicationName = bench-local"
                "initialPositionInStream = TRIM_HORIZON"
                // Required by the properties' validation, as by the daemon's; kcl-local ignores it.
                "AwsCredentialsProvider = DefaultCredentialsProvider"
                sprintf "maxRecords = %d" batchSize
                // The idle wait applies only to a read that found nothing, but 0 keeps it out whatever the source.
                "idleTimeBetweenReadsInMillis = 0"
            ]
        )

        let info =
            ProcessStartInfo(
                "dotnet",
                [
                    kclLocal
                    "-p"
                    properties
                    "--generate"
                    string records
                    "--payload"
                    string recordSize
                    "--shards"
                    "1"
                    "--state-dir"
                    dir.FullName
                    "--fresh"
                    "--quiet"
                    "--no-progress"
                    "--json"
                ],
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false
            )

        let clock = Stopwatch.StartNew()
        use proc = Process.Start info
        let errors = Collections.Concurrent.ConcurrentQueue<string>()
        proc.ErrorDataReceived.Add(fun e -> if not (isNull e.Data) then errors.Enqueue e.Data)
        proc.BeginErrorReadLine()
        let output = proc.StandardOutput.ReadToEnd()
        proc.WaitForExit()
        let wall = clock.Elapsed.TotalSeconds

        if proc.ExitCode <> 0 then
            failwithf "kcl-local exited with %d: %s %s" proc.ExitCode output (String.Join("\n", errors))

        use summary = System.Text.Json.JsonDocument.Parse output
        let root = summary.RootElement
        let delivered = root.GetProperty("delivered").GetInt32()

        if delivered <> records then
            failwithf "kcl-local delivered %d records of %d" delivered records

        {
            Child = child.Name
            Records = records
            Seconds = root.GetProperty("streamingSeconds").GetDouble()
            WallSeconds = wall
        }
    finally
        dir.Delete true
