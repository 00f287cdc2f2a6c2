/// Plays a daemon over real pipes: the exchanges of TRANSCRIPTS.md against the interpreter, in-process or against a
/// child process.
module Kcl.Core.Tests.Harness

open System
open System.Collections.Concurrent
open System.IO
open System.IO.Pipes
open System.Text
open System.Threading
open System.Threading.Tasks
open Kcl.Core
open Microsoft.Extensions.Logging
open Microsoft.Win32.SafeHandles
open Xunit

/// One line of a transcript.
type Exchange =
    /// The daemon writes this line to the child's stdin.
    | Daemon of line: string
    /// The child must write this line to its stdout.
    | Child of line: string
    /// The daemon closes the child's stdin.
    | EndOfInput

/// How long any single step may take before the test fails rather than hangs.
let stepTimeout = TimeSpan.FromSeconds 20.0

/// The repository's root, found from the test binaries' folder.
let repositoryRoot =
    let rec up (folder: DirectoryInfo) =
        if isNull folder then failwith "the repository root (with Kcl.slnx) was not found above the test binaries"
        elif File.Exists(Path.Combine(folder.FullName, "Kcl.slnx")) then folder.FullName
        else up folder.Parent

    up (DirectoryInfo AppContext.BaseDirectory)

/// The transcripts of TRANSCRIPTS.md by id ("T01"...), each a list of sessions (T19 holds two child processes).
let transcripts: Map<string, Exchange list list> =
    let text = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "data", "TRANSCRIPTS.md"))

    text.Split("\n## ")
    |> Array.choose (fun section ->
        if section.Length > 4 && section[0] = 'T' && Char.IsDigit section[1] then
            let id = section.Substring(0, 3)

            let exchanges =
                section.Split('\n')
                |> Array.choose (fun line ->
                    let line = line.TrimEnd '\r'

                    if line = "D> <EOF>" then Some EndOfInput
                    elif line.StartsWith "D> " then Some(Daemon(line.Substring 3))
                    elif line.StartsWith "C< " then Some(Child(line.Substring 3))
                    else None)
                |> List.ofArray

            let sessions =
                (exchanges, [ [] ])
                ||> List.foldBack (fun exchange sessions ->
                    match exchange, sessions with
                    | EndOfInput, current :: rest when not current.IsEmpty -> [ EndOfInput ] :: current :: rest
                    | exchange, current :: rest -> (exchange :: current) :: rest
                    | _, [] -> failwith "unreachable")
                |> List.filter (not << List.isEmpty)

            Some(id, sessions)
        else
            None)
    |> Map.ofArray

/// A logger that keeps every entry, for assertions.
type CapturingLogger() =
    let entries = ConcurrentQueue<LogLevel * string>()

    /// Every entry so far.
    member _.Entries = List.ofSeq entries

    /// A factory whose loggers all write here.
    member this.Factory =
        LoggerFactory.Create(fun builder ->
            builder.SetMinimumLevel(LogLevel.Trace).AddProvider(this) |> ignore)

    interface ILoggerProvider with
        member this.CreateLogger _ = this

    interface ILogger with
        member _.IsEnabled _ = true
        member _.BeginScope _ = null

        member _.Log(level, _, state, error, formatter) =
            entries.Enqueue(level, formatter.Invoke(state, error))

    interface IDisposable with
        member _.Dispose() = ()

/// Reads the next non-empty line the child wrote, failing instead of hanging.
let readLine (reader: StreamReader) =
    task {
        let mutable line = ""

        while line = "" do
            let! next = reader.ReadLineAsync().WaitAsync stepTimeout

            match next with
            | null -> failwith "the child closed its stdout while a line was expected"
            | text -> line <- text

        return line
    }

/// Plays exchanges against a child's stdin and stdout, asserting each child line byte for byte.
let play (exchanges: Exchange list) (toChild: Stream) (fromChild: StreamReader) =
    task {
        for exchange in exchanges do
            match exchange with
            | Daemon line ->
                do! toChild.WriteAsync(Encoding.UTF8.GetBytes(line + "\n"))
                do! toChild.FlushAsync()
            | Child expected ->
                let! actual = readLine fromChild
                Assert.Equal(expected, actual)
            | EndOfInput -> toChild.Dispose()
    }

/// Plays a whole session and closes stdin at the end if the session did not.
let playThenClose (exchanges: Exchange list) (toChild: Stream) (fromChild: StreamReader) =
    task {
        do! play exchanges toChild fromChild
        toChild.Dispose()
    }

/// Runs a handler in-process over real anonymous pipes while `drive` plays the daemon. The child's ends are
/// FileStreams, as a real child's stdin and stdout are, so the run takes the real child's path: a stdin thread that
/// starts the callbacks. Returns the exit code and everything the child wrote after `drive` finished (which must be
/// nothing but blank lines).
let runHandlerInProcess
    (options: RunOptions)
    (makeHandler: ILoggerFactory -> IActionHandler)
    (drive: Stream -> StreamReader -> Task)
    =
    task {
        use toChild = new AnonymousPipeServerStream(PipeDirection.Out)
        use fromChild = new AnonymousPipeServerStream(PipeDirection.In)
        // The pipe streams own the descriptors; the FileStreams only borrow them.
        let borrow (handle: SafePipeHandle) access =
            new FileStream(new SafeFileHandle(handle.DangerousGetHandle(), false), access, 1)

        use childStdin = borrow toChild.ClientSafePipeHandle FileAccess.Read
        use childStdout = borrow fromChild.ClientSafePipeHandle FileAccess.Write
        use reader = new StreamReader(fromChild, Encoding.ASCII)

        let options =
            { options with Streams = Some(childStdin :> Stream, childStdout :> Stream) }

        let running = Processor.runHandlerWith options makeHandler CancellationToken.None
        do! drive toChild reader
        let! code = running.WaitAsync stepTimeout
        fromChild.DisposeLocalCopyOfClientHandle()
        let! rest = reader.ReadToEndAsync().WaitAsync stepTimeout
        toChild.DisposeLocalCopyOfClientHandle()
        return code, rest
    }

/// Runs `processor` in-process over real anonymous pipes while `drive` plays the daemon (see runHandlerInProcess).
let runInProcess (options: RunOptions) (processor: Processor<'State>) (drive: Stream -> StreamReader -> Task) =
    runHandlerInProcess
        options
        (fun loggerFactory -> ProcessorHandler(processor, loggerFactory.CreateLogger "Processor"))
        drive

/// What a scripted processor does at each event, and what it saw.
type Script =
    {
        OnRecords: Kcl.Core.Record[] -> Command list
        OnShardEnded: Command list
        OnShutdownRequested: Command list
    }

/// A script that does nothing at all.
let idle =
    {
        OnRecords = fun _ -> []
        OnShardEnded = []
        OnShutdownRequested = []
    }

/// A pure processor that follows the script and records every event it is given.
let scripted (script: Script) =
    let seen = ConcurrentQueue<Event>()

    let processor =
        Processor.create () (fun () event ->
            seen.Enqueue event

            match event with
            | Event.RecordsReceived(records, _) -> (), script.OnRecords records
            | Event.ShardEnded -> (), script.OnShardEnded
            | Event.ShutdownRequested -> (), script.OnShutdownRequested
            | Event.CheckpointFailed(_, failure) -> (), [ Command.Log(LogLevel.Warning, failure.Detail) ]
            | _ -> (), [])

    processor, seen

/// Options for in-process runs: a fast retry policy and a captured log.
let testOptions (logger: CapturingLogger) =
    { RunOptions.Default with
        Retry =
            { RetryPolicy.Default with
                InitialBackoff = TimeSpan.FromMilliseconds 1.0
                MaxBackoff = TimeSpan.FromMilliseconds 4.0
            }
        LoggerFactory = Some logger.Factory
    }
