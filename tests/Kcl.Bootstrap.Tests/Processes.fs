(*
    Running the kcl-bootstrap tool and the stand-in daemon as real processes: javac compiles the stand-in once per
    run, a 127.0.0.1 repository serves it as the multilang jar, and every wait has a deadline.
*)
module Kcl.Bootstrap.Tests.Processes

open System
open System.Diagnostics
open System.IO
open System.Runtime.InteropServices
open System.Text
open System.Threading
open Kcl.Bootstrap
open Kcl.Bootstrap.Tests.Helpers

[<DllImport("libc", SetLastError = true)>]
extern int kill(int pid, int signal)

/// The repository's root, found from the test assembly's folder.
let repositoryRoot =
    let rec up (dir: DirectoryInfo) =
        if File.Exists(Path.Combine(dir.FullName, "Kcl.slnx")) then
            dir.FullName
        elif isNull dir.Parent then
            failwith "Kcl.slnx not found above the test assembly"
        else
            up dir.Parent

    up (DirectoryInfo AppContext.BaseDirectory)

let private configuration =
    if
        AppContext.BaseDirectory.Contains(
            string Path.DirectorySeparatorChar
            + "Release"
            + string Path.DirectorySeparatorChar
        )
    then
        "Release"
    else
        "Debug"

/// The tool's assembly, built beside the tests (the test project references it without loading it).
let toolDll =
    Path.Combine(repositoryRoot, "Kcl.Bootstrap.Tool", "bin", configuration, "net10.0", "kcl-bootstrap.dll")

/// A started process whose stdout and stderr lines are collected as they come.
type Running(info: ProcessStartInfo) =
    let out = ResizeArray<string>()
    let err = ResizeArray<string>()
    let changed = new SemaphoreSlim(0)

    do
        info.UseShellExecute <- false
        info.RedirectStandardOutput <- true
        info.RedirectStandardError <- true

    let p = Process.Start info

    let pump (reader: StreamReader) (lines: ResizeArray<string>) =
        Thread(fun () ->
            let mutable line = reader.ReadLine()

            while not (isNull line) do
                lock lines (fun () -> lines.Add line)
                changed.Release() |> ignore
                line <- reader.ReadLine())
        |> fun t ->
            t.IsBackground <- true
            t.Start()
            t

    let outThread = pump p.StandardOutput out
    let errThread = pump p.StandardError err

    /// The process id.
    member _.Pid = p.Id
    /// The stdout lines so far.
    member _.Out = lock out (fun () -> List.ofSeq out)
    /// The stderr lines so far.
    member _.Err = lock err (fun () -> List.ofSeq err)

    /// Waits until a stdout line satisfies the predicate; fails with both streams after the deadline.
    member this.WaitForLine(predicate: string -> bool, timeout: TimeSpan) =
        let deadline = DateTime.UtcNow + timeout

        while not (this.Out |> List.exists predicate) do
            let left = deadline - DateTime.UtcNow

            if
                left <= TimeSpan.Zero
                || (p.HasExited && not (this.Out |> List.exists predicate) && not outThread.IsAlive)
            then
                failwithf
                    "no expected line within %O; stdout:\n%s\nstderr:\n%s"
                    timeout
                    (String.Join("\n", this.Out))
                    (String.Join("\n", this.Err))

            changed.Wait(min left (TimeSpan.FromMilliseconds 200.0)) |> ignore

    /// Waits for the exit (bounded) and for both streams to drain; returns the exit code.
    member this.Exit(timeout: TimeSpan) =
        if not (p.WaitForExit timeout) then
            p.Kill true

            failwithf
                "did not exit within %O; stdout:\n%s\nstderr:\n%s"
                timeout
                (String.Join("\n", this.Out))
                (String.Join("\n", this.Err))

        outThread.Join(TimeSpan.FromSeconds 10.0) |> ignore
        errThread.Join(TimeSpan.FromSeconds 10.0) |> ignore
        p.ExitCode

    /// Both streams, for failure messages.
    member this.Transcript =
        sprintf "stdout:\n%s\nstderr:\n%s" (String.Join("\n", this.Out)) (String.Join("\n", this.Err))

    interface IDisposable with
        member _.Dispose() =
            if not p.HasExited then
                p.Kill true

            p.Dispose()

/// Runs a program to completion (bounded) and returns its exit code and output.
let runToEnd (program: string) (args: string list) (timeout: TimeSpan) =
    use r = new Running(ProcessStartInfo(program, args))
    let code = r.Exit timeout
    code, r.Out, r.Err

/// The coordinate the stand-in is published as.
let multilang =
    {
        Group = "software.amazon.kinesis"
        Artifact = Manifest.MultiLangArtifact
        Version = "3.1.3"
    }

/// What every launch test shares: the compiled stand-in, a repository serving it, a manifest naming it, and the
/// processor script (in a folder without spaces: the daemon splits executableName on them).
type StandIn =
    {
        Server: RepoServer
        ManifestFile: string
        Processor: string
        Jar: byte[]
    }

let private scratch =
    let dir =
        Path.Combine(Path.GetTempPath(), "kcl-bootstrap-standin-" + Guid.NewGuid().ToString "N")

    Directory.CreateDirectory dir |> ignore

    AppDomain.CurrentDomain.ProcessExit.Add(fun _ ->
        try
            Directory.Delete(dir, true)
        with _ ->
            ())

    dir

/// Compiled once per run. A missing javac fails every test that needs it: it is never a skip.
let standIn =
    lazy
        (let source =
            Path.Combine(repositoryRoot, "tests", "Kcl.Bootstrap.Tests", "standin", "MultiLangDaemon.java")

         let classes = Path.Combine(scratch, "classes")

         let code, out, err =
             runToEnd "javac" [ "--release"; "17"; "-d"; classes; source ] (TimeSpan.FromSeconds 120.0)

         if code <> 0 then
             failwithf "javac failed (%d): %s %s" code (String.Join("\n", out)) (String.Join("\n", err))

         let entries =
             Directory.GetFiles(classes, "*.class", SearchOption.AllDirectories)
             |> Array.map (fun f -> Path.GetRelativePath(classes, f).Replace('\\', '/'), File.ReadAllBytes f)
             |> List.ofArray

         // Entries that must not raise the minimum: a Java 21 multi-release class and a module-info of major 65.
         let jar =
             makeJar (
                 entries
                 @ [
                     "META-INF/versions/21/software/amazon/kinesis/multilang/Extra.class", classBytes 65 "x"
                     "module-info.class", classBytes 65 "x"
                 ]
             )

         let repo = Path.Combine(scratch, "repo")
         publish repo multilang jar false |> ignore
         let manifest = Path.Combine(scratch, "manifest.txt")
         File.WriteAllText(manifest, string multilang + "\n")
         let processor = Path.Combine(scratch, "processor.sh")

         File.Copy(
             Path.Combine(repositoryRoot, "tests", "Kcl.Bootstrap.Tests", "standin", "processor.sh"),
             processor,
             true
         )

         File.SetUnixFileMode(processor, UnixFileMode.UserRead ||| UnixFileMode.UserWrite ||| UnixFileMode.UserExecute)

         {
             Server = new RepoServer(repo)
             ManifestFile = manifest
             Processor = processor
             Jar = jar
         })

/// Writes a properties file for the stand-in; extra lines are appended.
let writeProperties (folder: string) (processor: string) (extra: string list) =
    let file = Path.Combine(folder, "daemon.properties")

    File.WriteAllLines(
        file,
        [
            "executableName = " + processor
            "applicationName = launch-test"
            "streamName = launch-test"
            "AwsCredentialsProvider = DefaultCredentialsProvider"
            "shutdownGraceMillis = 5000"
        ]
        @ extra
    )

    file

/// The tool's arguments for a launch of the stand-in from a cache folder.
let toolArgs (s: StandIn) (properties: string) (cache: string) (extra: string list) =
    [
        toolDll
        "-p"
        properties
        "-c"
        cache
        "--manifest"
        s.ManifestFile
        "--maven-repo"
        string s.Server.Url
    ]
    @ extra

/// Starts the tool (through `dotnet`), optionally as the leader of a new session and process group (setsid).
let startTool (ownGroup: bool) (args: string list) =
    // With the default handling of the signals the tests send: one ignored on entry (SIGINT, when the test runner is a
    // shell's background job) would be ignored by the tool and the JVM too, and never reach their handlers.
    let command =
        [ "env"; "--default-signal=INT,TERM,HUP"; "dotnet" ] @ args

    let info =
        if ownGroup then
            ProcessStartInfo("setsid", command)
        else
            ProcessStartInfo(command.Head, command.Tail)

    new Running(info)

/// Whether any process's command line mentions the text (Linux /proc).
let anyProcessMentions (text: string) =
    Directory.GetDirectories "/proc"
    |> Array.filter (fun d -> Path.GetFileName(d) |> Seq.forall Char.IsDigit)
    |> Array.exists (fun d ->
        try
            File.ReadAllText(Path.Combine(d, "cmdline")).Contains text
        with _ ->
            false)
