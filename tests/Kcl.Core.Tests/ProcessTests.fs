/// Real child processes over real pipes: what the daemon would see.
module Kcl.Core.Tests.ProcessTests

open System
open System.Diagnostics
open System.IO
open System.Text
open System.Threading.Tasks
open Kcl.Core
open Kcl.Core.Tests.Harness
open Xunit

/// A started child whose stderr is collected in the background.
type private Child =
    {
        Process: Process
        Stderr: StringBuilder
        StderrDone: Task
    }

    member this.StderrText =
        lock this.Stderr (fun () -> this.Stderr.ToString())

let private startWith (environment: (string * string) list) (file: string) (arguments: string list) =
    if Path.IsPathRooted file && not (File.Exists file) then
        failwithf "%s does not exist; build the solution and run `dotnet fsi build.fsx samples` first" file

    let info =
        ProcessStartInfo(
            file,
            arguments,
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            StandardOutputEncoding = Encoding.ASCII
        )

    info.Environment["KCL_LOG_LEVEL"] <- "debug"

    for name, value in environment do
        info.Environment[name] <- value

    let child = Process.Start info
    let stderr = StringBuilder()

    let drain =
        task {
            let mutable line = ""

            while not (isNull line) do
                let! next = child.StandardError.ReadLineAsync()
                line <- next

                if not (isNull line) then
                    lock stderr (fun () -> stderr.AppendLine line |> ignore)
        }

    {
        Process = child
        Stderr = stderr
        StderrDone = drain
    }

let private start = startWith []

/// Plays the exchanges, then waits for the exit and checks that stdout held nothing but protocol lines.
let private playAndFinish (child: Child) (exchanges: Exchange list) =
    task {
        try
            do! playThenClose exchanges child.Process.StandardInput.BaseStream child.Process.StandardOutput
            let! rest = child.Process.StandardOutput.ReadToEndAsync().WaitAsync stepTimeout
            do! child.Process.WaitForExitAsync().WaitAsync stepTimeout
            do! child.StderrDone.WaitAsync stepTimeout
            Assert.True(String.IsNullOrWhiteSpace rest, sprintf "stdout held more than protocol lines: %s" rest)
            return child.Process.ExitCode
        with error ->
            if not child.Process.HasExited then child.Process.Kill true
            return failwithf "%s\nthe child's stderr:\n%s" (error.ToString()) child.StderrText
    }

let private testChild =
    // The test binaries sit in bin/<configuration>/net10.0; the test child is built in the same configuration.
    let configuration =
        DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)).Parent.Name

    Path.Combine(repositoryRoot, "tests", "Kcl.TestChild", "bin", configuration, "net10.0", "Kcl.TestChild")

[<Fact>]
let ``user code writing to stdout in every way leaves the protocol intact`` () =
    task {
        let child = start testChild []
        let! code = playAndFinish child transcripts["T20"].Head

        Assert.Equal(0, code)
        let stderr = child.StderrText

        for stray in
            [
                "stray: Console.WriteLine"
                "stray: printfn"
                "stray: a Console.Out captured before the run"
                "stray: a console logger built before the run"
                "stray: write(1) from native code"
                "stray: a child process"
            ] do
            Assert.Contains(stray, stderr)
    }

let private signal (name: string) (processGroup: int) =
    use kill = Process.Start(ProcessStartInfo("kill", [ "-" + name; "--"; sprintf "-%d" processGroup ], UseShellExecute = false))
    kill.WaitForExit()
    Assert.Equal(0, kill.ExitCode)

let private waitFor (child: Child) (text: string) =
    task {
        let deadline = DateTime.UtcNow + stepTimeout

        while not (child.StderrText.Contains text) do
            if DateTime.UtcNow > deadline then
                failwithf "the child never logged %s; stderr:\n%s" text child.StderrText

            do! Task.Delay 20
    }

[<Fact>]
let ``SIGINT, SIGTERM and SIGHUP to the process group do not end the child, and closing stdin does`` () =
    task {
        // setsid gives the child a process group of its own, as a daemon's children share the daemon's. env starts it
        // with these signals' default handling: a signal ignored on entry (SIGINT, when the test runner is a shell's
        // background job) never reaches the child's handler, which this test is about.
        let child = start "setsid" [ "env"; "--default-signal=INT,TERM,HUP"; testChild ]
        let session = transcripts["T20"].Head
        let initialize, rest = List.splitAt 2 session
        do! play initialize child.Process.StandardInput.BaseStream child.Process.StandardOutput

        for name in [ "INT"; "TERM"; "HUP" ] do
            signal name child.Process.Id
            do! waitFor child (sprintf "ignoring SIG%s" name)

        Assert.False(child.Process.HasExited)
        let! code = playAndFinish child rest
        Assert.Equal(0, code)
    }

let private published name =
    Path.Combine(repositoryRoot, "artifacts", "samples", name, name)

let private sample = published "fsharp-consumer"

[<Theory>]
[<InlineData "fsharp-consumer">]
[<InlineData "csharp-consumer">]
let ``a published sample runs a whole shard lifecycle over real pipes`` (name: string) =
    task {
        let child = start (published name) []
        let transcript = transcripts["T20"].Head

        // T20, except that the sample checkpoints each batch with no arguments (at its last record).
        let sampleCheckpoint = """{"action":"checkpoint","sequenceNumber":null,"subSequenceNumber":null}"""
        let okReply = """{"action":"checkpoint","sequenceNumber":null,"subSequenceNumber":null,"error":null}"""

        let exchanges =
            [
                yield! transcript |> List.take 3
                Child sampleCheckpoint
                Daemon okReply
                Child """{"action":"status","responseFor":"processRecords"}"""
                Daemon """{"action":"processRecords","records":[],"millisBehindLatest":120000}"""
                Child sampleCheckpoint
                Daemon okReply
                Child """{"action":"status","responseFor":"processRecords"}"""
                Daemon """{"action":"shutdownRequested"}"""
                Child sampleCheckpoint
                Daemon """{"action":"checkpoint","sequenceNumber":null,"subSequenceNumber":null,"error":"ShutdownException"}"""
                Child """{"action":"status","responseFor":"shutdownRequested"}"""
                Daemon """{"action":"shardEnded"}"""
                Child sampleCheckpoint
                Daemon okReply
                Child """{"action":"status","responseFor":"shardEnded"}"""
                EndOfInput
            ]

        let! code = playAndFinish child exchanges
        Assert.Equal(0, code)
        let stderr = child.StderrText
        Assert.Contains("serving shardId-000000000000 from TRIM_HORIZON", stderr)
        // The sample's own line, logged from its callback, carries the shard's scope wherever the callback ran.
        let batchLine =
            stderr.Split('\n') |> Array.find (fun line -> line.Contains "batch 1: 2 records")

        Assert.Contains("[shardId-000000000000]", batchLine)

        // One log entry per line, in the format of POLICY.md: time, level, shard id, message.
        for line in stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries) do
            Assert.Matches(@"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (TRACE|DEBUG|INFO |WARN |ERROR|CRIT ) \[[^\]]+\] ", line)
    }

[<Fact>]
let ``a child given garbage exits with the undecodable-input code and writes nothing to stdout`` () =
    task {
        let child = start sample []
        let! code = playAndFinish child [ Daemon "null" ]
        Assert.Equal(3, code)
        Assert.Contains("expected a JSON object, found null", child.StderrText)
    }

[<Fact>]
let ``KCL_LOG_FILE sends the log to a file and KCL_LOG_LEVEL filters it`` () =
    task {
        let logFile = Path.GetTempFileName()

        try
            let child = startWith [ "KCL_LOG_FILE", logFile; "KCL_LOG_LEVEL", "warning" ] sample []
            let initialize = transcripts["T01"].Head
            let! code = playAndFinish child (initialize @ [ Daemon "[]" ])
            Assert.Equal(3, code)
            Assert.DoesNotContain("INFO", child.StderrText)
            Assert.DoesNotContain("ERROR", child.StderrText)
            let log = File.ReadAllText logFile
            Assert.Contains("ERROR [shardId-000000000000] Kcl: cannot act on a line from the daemon", log)
            Assert.DoesNotContain("INFO", log)
        finally
            File.Delete logFile
    }

(* stdin's pipe: widened by the child itself, within the user's pipe memory. *)

[<System.Runtime.InteropServices.DllImport("libc", SetLastError = true)>]
extern int private fcntl(int fd, int cmd, int arg)

/// The size of the pipe behind a child's stdin, read from our end of it (F_GETPIPE_SZ).
let private stdinPipeSize (child: Child) =
    let pipe = child.Process.StandardInput.BaseStream :?> Pipes.PipeStream
    fcntl (int (pipe.SafePipeHandle.DangerousGetHandle()), 1032, 0)

let private stdinPipeAfterInitialize (environment: (string * string) list) =
    task {
        let child = startWith environment testChild []
        let initialize, rest = List.splitAt 2 transcripts["T20"].Head
        do! play initialize child.Process.StandardInput.BaseStream child.Process.StandardOutput
        let size = stdinPipeSize child
        let! code = playAndFinish child rest
        Assert.Equal(0, code)
        return size, child.StderrText
    }

[<Fact>]
let ``on Linux the child widens its stdin pipe to 1 MiB, so a batch of 1 KiB records arrives in one read`` () =
    task {
        if OperatingSystem.IsLinux() then
            let! size, stderr = stdinPipeAfterInitialize []
            Assert.Equal(1 <<< 20, size)
            Assert.Contains("stdin's pipe widened from 65536 bytes to 1048576 bytes", stderr)
    }

[<Fact>]
let ``KCL_STDIN_PIPE_BYTES sets the width, 0 leaves the pipe alone, and nonsense is a warning`` () =
    task {
        if OperatingSystem.IsLinux() then
            let! size, stderr = stdinPipeAfterInitialize [ "KCL_STDIN_PIPE_BYTES", "262144" ]
            Assert.Equal(262144, size)
            Assert.Contains("widened from 65536 bytes to 262144 bytes", stderr)

            let! size, stderr = stdinPipeAfterInitialize [ "KCL_STDIN_PIPE_BYTES", "0" ]
            Assert.Equal(65536, size)
            Assert.Contains("DEBUG [-] Kcl: stdin is a pipe of 65536 bytes", stderr)

            let! size, stderr = stdinPipeAfterInitialize [ "KCL_STDIN_PIPE_BYTES", "1 MiB" ]
            Assert.Equal(65536, size)
            Assert.Contains("WARN  [-] Kcl: stdin's pipe left at 65536 bytes: KCL_STDIN_PIPE_BYTES=\"1 MiB\"", stderr)
    }

[<Fact>]
let ``the width asked for comes from KCL_STDIN_PIPE_BYTES, or is 1 MiB`` () =
    Assert.Equal(Ok(Some(1 <<< 20)), InputPipe.requested null)
    Assert.Equal(Ok(Some(1 <<< 20)), InputPipe.requested "")
    Assert.Equal(Ok None, InputPipe.requested "0")
    Assert.Equal(Ok(Some 131072), InputPipe.requested " 131072 ")

    for nonsense in [ "-1"; "1.5"; "64k"; "99999999999" ] do
        match InputPipe.requested nonsense with
        | Error problem -> Assert.Contains("KCL_STDIN_PIPE_BYTES=\"" + nonsense + "\"", problem)
        | Ok width -> failwithf "%s gave %A" nonsense width

[<Fact>]
let ``the probes keep a quarter of the user's soft limit on pipe memory free`` () =
    // Linux's default soft limit: 16384 pages of 4 KiB, 64 MiB; a quarter is sixteen pipes of 1 MiB.
    Assert.Equal(16, InputPipe.probesFor 16384L 4096L (1 <<< 20))
    Assert.Equal(64, InputPipe.probesFor 16384L 4096L 262144)
    // Rounded up: 1 MiB of reserve in pipes of 768 KiB takes two.
    Assert.Equal(2, InputPipe.probesFor 1024L 4096L (768 * 1024))
    // No soft limit, nothing to keep free.
    Assert.Equal(0, InputPipe.probesFor 0L 4096L (1 <<< 20))

[<Fact>]
let ``stdin is widened only where the probes find room, and never narrowed`` () =
    let calls = ResizeArray<string>()
    let probesFor width = width / 65536

    let roomFor room count width =
        calls.Add(sprintf "probe %d x %d" count width)
        room

    let grow result width =
        calls.Add(sprintf "grow %d" width)
        result

    let widen current requested room grown =
        calls.Clear()
        let outcome = InputPipe.widen current requested probesFor (roomFor room) (grow grown)
        outcome, List.ofSeq calls

    Assert.Equal(
        (InputPipe.Outcome.Widened(65536, 1048576), [ "probe 16 x 1048576"; "grow 1048576" ]),
        widen 65536 (Ok(Some 1048576)) true (Some 1048576)
    )

    match widen 65536 (Ok(Some 1048576)) false (Some 1048576) with
    | InputPipe.Outcome.Refused(65536, reason), [ "probe 16 x 1048576" ] -> Assert.Contains("a quarter", reason)
    | other -> failwithf "%A" other

    match widen 65536 (Ok(Some 1048576)) true None with
    | InputPipe.Outcome.Refused(65536, reason), [ _; "grow 1048576" ] -> Assert.Contains("kernel refused", reason)
    | other -> failwithf "%A" other

    Assert.Equal((InputPipe.Outcome.Unchanged 1048576, []), widen 1048576 (Ok(Some 262144)) true (Some 262144))
    Assert.Equal((InputPipe.Outcome.Unchanged 65536, []), widen 65536 (Ok None) true (Some 1048576))
    Assert.Equal((InputPipe.Outcome.Misconfigured(65536, "bad"), []), widen 65536 (Error "bad") true (Some 1048576))

[<Fact>]
let ``the probe pipes are closed again`` () =
    if OperatingSystem.IsLinux() then
        let openFds () =
            Directory.GetFiles "/proc/self/fd" |> Array.length

        // Other tests run beside this one and open files of their own; 8,000 leaked descriptors would stand out.
        let before = openFds ()

        for _ in 1..1000 do
            Assert.True(Stdio.roomForPipes 4 262144)

        let after = openFds ()
        Assert.True(after - before < 100, sprintf "%d open descriptors before, %d after" before after)
