/// A daemon stand-in that costs next to nothing: it writes pre-encoded lines and, for each line the child writes,
/// only looks for "checkpoint" or "status" in it. Lock-step, as the real daemon: the next action goes only after the
/// status of the last.
module ProcessBench.Driver

open System
open System.Diagnostics
open System.IO
open ProcessBench.Workload

type Child =
    {
        Name: string
        File: string
        Arguments: string list
        /// Variables set for the child only, e.g. a runtime setting to compare.
        Environment: (string * string) list
    }

type Measurement =
    {
        Child: string
        Workload: string
        Records: int
        Seconds: float
        CpuSeconds: float
        PeakRssMiB: float
        StartupMs: float
        /// The child's CPU time over the second half of the stream's records, read from /proc at the status of the
        /// middle batch and of the last: the steady state within one process, without start-up or exit.
        SecondHalfCpuSeconds: float
        SecondHalfRecords: int
    }

    member this.RecordsPerSecond = float this.Records / this.Seconds

/// The CPU time a child of GNU time has used so far, all its threads, exited ones included (/proc/<pid>/stat, in
/// clock ticks of 10 ms: about 3% of a 100,000-record half).
let private childCpuSeconds (timePid: int) =
    let pid =
        File.ReadAllText(sprintf "/proc/%d/task/%d/children" timePid timePid).Trim().Split(' ')[0]

    let stat = File.ReadAllText(sprintf "/proc/%s/stat" pid)
    // The fields after the command's closing parenthesis start at the third, the state; utime and stime are the 14th
    // and 15th.
    let fields = stat.Substring(stat.LastIndexOf ')' + 2).Split ' '
    (float fields[11] + float fields[12]) / 100.0

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

/// Runs one child over the workload under GNU time, which reports its CPU time and peak RSS.
let run (child: Child) (workload: Workload) =
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
    proc.ErrorDataReceived.Add ignore
    proc.BeginErrorReadLine()
    let stdin = proc.StandardInput.BaseStream
    let lines = Lines proc.StandardOutput.BaseStream
    stdin.Write workload.Initialize
    stdin.Flush()
    untilStatus lines stdin workload.Reply
    let startup = clock.Elapsed.TotalMilliseconds
    let steady = Stopwatch.StartNew()

    let middle = workload.Batches.Length / 2
    let mutable cpuAtMiddle = 0.0

    for index, batch in Array.indexed workload.Batches do
        if index = middle then
            cpuAtMiddle <- childCpuSeconds proc.Id

        stdin.Write batch
        stdin.Flush()
        untilStatus lines stdin workload.Reply

    let secondHalfCpu = childCpuSeconds proc.Id - cpuAtMiddle
    stdin.Write workload.ShardEnded
    stdin.Flush()
    untilStatus lines stdin workload.Reply
    stdin.Close()
    proc.WaitForExit()
    let seconds = steady.Elapsed.TotalSeconds

    let fields = (File.ReadAllLines timeFile |> Array.last).Split ' '
    File.Delete timeFile

    {
        Child = child.Name
        Workload = workload.Name
        Records = workload.Records
        Seconds = seconds
        CpuSeconds = float fields[0] + float fields[1]
        PeakRssMiB = float fields[2] / 1024.0
        StartupMs = startup
        SecondHalfCpuSeconds = secondHalfCpu
        SecondHalfRecords = workload.Records - middle * workload.BatchSize
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
