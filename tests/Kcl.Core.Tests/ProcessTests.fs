/// Real child processes over real pipes: what the daemon would see.
module Kcl.Core.Tests.ProcessTests

open System
open System.Diagnostics
open System.IO
open System.Text
open System.Threading.Tasks
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
        // setsid gives the child a process group of its own, as a daemon's children share the daemon's.
        let child = start "setsid" [ testChild ]
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
        Assert.Contains("batch 1: 2 records", stderr)
        Assert.Contains("[shardId-000000000000]", stderr)

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
