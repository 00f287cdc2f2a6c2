// Build script for Kcl for .NET. Usage: dotnet fsi build.fsx [target] [--locked] [-- runner args]
//
// Deliberately uses no NuGet packages: the configured feed cannot restore FAKE 6, and a script
// that only needs the SDK keeps working on a fresh machine with an empty package cache.

open System
open System.Diagnostics
open System.IO
open System.Xml.Linq

let root = __SOURCE_DIRECTORY__
let solution = "Kcl.slnx"

// fsi swallows a literal "--" and hands us everything after the script name, so the first
// argument is the target, --locked is ours, and everything else goes to the test runner.
let args = fsi.CommandLineArgs |> Array.skip 1 |> List.ofArray

let target, scriptArgs =
    match args with
    | t :: rest when not (t.StartsWith "-") -> Some t, rest
    | rest -> None, rest

let locked =
    List.contains "--locked" scriptArgs
    || String.Equals(Environment.GetEnvironmentVariable "CI", "true", StringComparison.OrdinalIgnoreCase)

let runnerArgs = scriptArgs |> List.filter ((<>) "--locked")

exception StepFailed of string

/// Runs a command with the console inherited, so its output streams live; returns the exit code.
let run (exe: string) (argv: string list) =
    printfn "> %s %s" exe (String.Join(" ", argv))

    let psi =
        ProcessStartInfo(exe, argv, WorkingDirectory = root, UseShellExecute = false)

    use p = Process.Start psi
    p.WaitForExit()
    p.ExitCode

let exec exe argv =
    let code = run exe argv

    if code <> 0 then
        raise (StepFailed(sprintf "%s %s exited with %d" exe (String.Join(" ", argv)) code))

/// Asks MSBuild for the output path and assembly name, so a renamed assembly or a new TFM needs no
/// script change. Two properties are requested because with one MSBuild prints a bare value, not JSON.
let projectInfo (project: string) =
    let psi =
        ProcessStartInfo(
            "dotnet",
            [
                "msbuild"
                project
                "-p:Configuration=Release"
                "-getProperty:TargetPath"
                "-getProperty:AssemblyName"
            ],
            WorkingDirectory = root,
            UseShellExecute = false,
            RedirectStandardOutput = true
        )

    use p = Process.Start psi
    let out = p.StandardOutput.ReadToEnd()
    p.WaitForExit()

    if p.ExitCode <> 0 then
        raise (StepFailed(sprintf "cannot evaluate %s: %s" project out))

    use doc = Text.Json.JsonDocument.Parse out
    let props = doc.RootElement.GetProperty "Properties"

    {|
        TargetPath = props.GetProperty("TargetPath").GetString()
        AssemblyName = props.GetProperty("AssemblyName").GetString()
    |}

/// Test and sample projects are discovered, so adding one needs no change here.
let discover folder =
    let dir = Path.Combine(root, folder)

    if Directory.Exists dir then
        [
            for pattern in [ "*.fsproj"; "*.csproj" ] do
                yield! Directory.GetFiles(dir, pattern, SearchOption.AllDirectories)
        ]
        |> List.filter (fun p -> Path.GetRelativePath(dir, p).Split(Path.DirectorySeparatorChar).Length = 2)
        |> List.map (fun p -> Path.GetRelativePath(root, p))
        |> List.sort
    else
        []

// Several targets need restored tools and packages; do it once per invocation.
let mutable restored = false

let restore () =
    if not restored then
        exec "dotnet" [ "tool"; "restore" ]
        exec "dotnet" ([ "restore"; solution ] @ (if locked then [ "--locked-mode" ] else []))
        restored <- true

let mutable built = false

let build () =
    restore ()

    if not built then
        exec "dotnet" [ "build"; solution; "-c"; "Release"; "--no-restore" ]
        built <- true

type Counts =
    {
        Passed: int
        Failed: int
        Skipped: int
    }

let zero = { Passed = 0; Failed = 0; Skipped = 0 }

let add a b =
    {
        Passed = a.Passed + b.Passed
        Failed = a.Failed + b.Failed
        Skipped = a.Skipped + b.Skipped
    }

let brokenProject = { zero with Failed = 1 }

/// Runs one test project's xunit.v3 executable directly and reads its counts from the xUnit XML
/// report: the console summary is meant for people, the XML is a stable format.
let runTestProject (project: string) =
    let name = Path.GetFileNameWithoutExtension project

    if not (File.ReadAllText(Path.Combine(root, solution)).Contains(project.Replace('\\', '/'))) then
        eprintfn "error: %s is not in %s, so it was not built; add it with 'dotnet sln add'" project solution
        brokenProject
    else
        let dll = (projectInfo project).TargetPath
        let report = Path.Combine(root, "artifacts", "test-results", name + ".xml")
        Directory.CreateDirectory(Path.GetDirectoryName report) |> ignore
        File.Delete report
        let code = run "dotnet" ([ dll; "-noColor"; "-xml"; report ] @ runnerArgs)

        if not (File.Exists report) then
            eprintfn "error: %s wrote no report (exit code %d)" name code
            brokenProject
        else
            let attr (e: XElement) (n: string) =
                match e.Attribute(XName.Get n) with
                | null -> 0
                | a -> int a.Value

            let assemblies =
                XDocument.Load(report).Root.Elements(XName.Get "assembly") |> List.ofSeq

            let sum n =
                assemblies |> List.sumBy (fun a -> attr a n)
            // "errors" are failures outside any test (fixture, cleanup, crash); count them as failed.
            let counts =
                {
                    Passed = sum "passed"
                    Failed = sum "failed" + sum "errors"
                    Skipped = sum "skipped"
                }

            // A test project that runs nothing is broken, unless a filter legitimately selected nothing.
            if sum "total" = 0 && List.isEmpty runnerArgs then
                eprintfn "error: %s ran no test" name
                add counts brokenProject
            elif code <> 0 && counts.Failed = 0 then
                eprintfn "error: %s exited with %d but reported no failure" name code
                add counts brokenProject
            else
                counts

/// Publishes each sample to artifacts/samples/<assembly>/ so that <assembly>/<assembly> is the
/// executable the MultiLangDaemon's properties file names.
let samples () =
    restore ()

    for project in discover "samples" do
        let name = (projectInfo project).AssemblyName
        let out = Path.Combine("artifacts", "samples", name)

        exec
            "dotnet"
            // publish has no --locked-mode switch; the property is what that switch sets.
            ([ "publish"; project; "-c"; "Release"; "-o"; out ]
             @ (if locked then [ "-p:RestoreLockedMode=true" ] else []))

        let exe = Path.Combine(root, out, name)

        if not (File.Exists exe) then
            raise (StepFailed(sprintf "%s did not produce %s" project exe))

        printfn "sample: %s" (Path.GetRelativePath(root, exe))

let test () =
    // Only *Tests projects hold tests; others under tests/ are fixtures, such as the child processes they start.
    let projects =
        discover "tests"
        |> List.filter (fun p -> Path.GetFileNameWithoutExtension(p).EndsWith "Tests")

    let counts =
        try
            build ()
            // The process-level tests start the published samples, as the daemon would.
            samples ()
            projects |> List.map runTestProject |> List.fold add zero
        with e ->
            // Nothing (more) could run; still end with the summary line that CI reads.
            eprintfn
                "error: %s"
                (match e with
                 | StepFailed msg -> msg
                 | e -> string e)

            { zero with
                Failed = max 1 projects.Length
            }

    let failed = counts.Failed > 0 || counts.Passed + counts.Failed + counts.Skipped = 0

    let counts =
        if failed && counts.Failed = 0 then
            brokenProject
        else
            counts

    printfn "%d passed, %d failed, %d skipped" counts.Passed counts.Failed counts.Skipped

    if failed then
        exit 1

/// Runs a tool and, when it fails, ends the script with the tool's own exit code.
let runPassingExitCode exe argv =
    let code = run exe argv

    if code <> 0 then
        exit code

/// Builds the kcl-bootstrap tool and returns its assembly's path.
let bootstrapTool () =
    restore ()
    let project = Path.Combine("Kcl.Bootstrap.Tool", "Kcl.Bootstrap.Tool.fsproj")
    exec "dotnet" [ "build"; project; "-c"; "Release"; "--no-restore" ]
    (projectInfo project).TargetPath

/// Runs kcl-bootstrap with the arguments after "--" and ends with its exit code (with --execute, the daemon's).
/// Options and environment variables (KCL_MAVEN_REPO, KCL_CACHE_DIR, JAVA_HOME) are the tool's own.
let runBootstrap (args: string list) =
    let dll = bootstrapTool ()
    // Ctrl-C reaches the whole process group: the daemon shuts down gracefully, and we wait to report its exit code.
    Console.CancelKeyPress.Add(fun e -> e.Cancel <- true)
    runPassingExitCode "dotnet" (dll :: args)

/// Builds the kcl-local tool alone (the main job needs neither the tests nor the benchmarks) and returns its assembly.
let localTool () =
    restore ()
    let project = Path.Combine("Kcl.Local.Tool", "Kcl.Local.Tool.fsproj")
    exec "dotnet" [ "build"; project; "-c"; "Release"; "--no-restore" ]
    (projectInfo project).TargetPath

/// Runs kcl-local with the arguments after `--`, from the repository root (where the samples' executableName
/// paths start), and exits with its exit code.
let local () =
    runPassingExitCode "dotnet" (localTool () :: runnerArgs)

let fetchJars () =
    runBootstrap ("--print-classpath" :: runnerArgs)

let runDaemon () = runBootstrap runnerArgs

/// The main job's demonstration: each published sample under the local daemon over a generated stream of 4 shards,
/// with its own applicationName (from its properties file) and fresh state, so a second run does what the first did.
let demo () =
    let tool = localTool ()

    if not (Directory.Exists(Path.Combine(root, "artifacts", "samples"))) then
        samples ()

    for properties in [ "samples/csharp-consumer.properties"; "samples/fsharp-consumer.properties" ] do
        exec
            "dotnet"
            [
                tool
                "--properties"
                properties
                "--generate"
                "4000"
                "--shards"
                "4"
                "--state-dir"
                Path.Combine("artifacts", "local-state")
                "--fresh"
                "--quiet"
                "--no-progress"
            ]

/// Packs every IsPackable project (the libraries and the two tools) from the Release build into artifacts/packages/,
/// emptied first so that a second run leaves the same set of packages. Arguments after `--` go to `dotnet pack`,
/// e.g. `pack -- -p:VersionSuffix=beta.1`.
let pack () =
    build ()
    let out = Path.Combine(root, "artifacts", "packages")

    if Directory.Exists out then
        Directory.Delete(out, true)

    exec "dotnet" ([ "pack"; solution; "-c"; "Release"; "--no-build"; "-o"; out ] @ runnerArgs)

    for file in Directory.GetFiles(out) |> Array.sort do
        printfn "package: %s" (Path.GetRelativePath(root, file))

/// Copies a committed npm folder's files (not a node_modules of a developer's own install) into `folder` under
/// artifacts/ and installs it there from its lock file, with no install scripts, within 3 minutes.
let npmInstall (source: string) (folder: string) =
    Directory.CreateDirectory folder |> ignore

    for file in Directory.GetFiles source do
        File.Copy(file, Path.Combine(folder, Path.GetFileName file), true)

    let npm = if OperatingSystem.IsWindows() then "npm.cmd" else "npm"

    use installing =
        Process.Start(
            ProcessStartInfo(
                npm,
                [ "ci"; "--ignore-scripts"; "--no-audit"; "--no-fund"; "--loglevel=error" ],
                WorkingDirectory = folder,
                UseShellExecute = false
            )
        )

    if not (installing.WaitForExit(TimeSpan.FromMinutes 3.0)) || installing.ExitCode <> 0 then
        raise (StepFailed(sprintf "npm ci in %s failed or took longer than 3 minutes" folder))

/// The whole pipeline on one machine: kinesalite (installed from tests/kinesalite with npm into artifacts/) on
/// 127.0.0.1, the Producer sample putting 1000 records into a 2-shard stream, and kcl-local reading the stream from
/// the endpoint into the C# sample until every record was delivered. The emulator is stopped by its PID.
let pipeline () =
    let records = 1000
    let stream = "kcl-pipeline"
    let tool = localTool ()
    samples ()
    let folder = Path.Combine(root, "artifacts", "kinesalite")
    npmInstall (Path.Combine(root, "tests", "kinesalite")) folder

    let port =
        let listener = new Net.Sockets.TcpListener(Net.IPAddress.Loopback, 0)
        listener.Start()
        let port = (listener.LocalEndpoint :?> Net.IPEndPoint).Port
        listener.Stop()
        port

    let endpoint = sprintf "http://127.0.0.1:%d/" port

    use emulator =
        Process.Start(
            ProcessStartInfo(
                "node",
                [ "start.js"; string port ],
                WorkingDirectory = folder,
                UseShellExecute = false,
                RedirectStandardOutput = true
            )
        )

    try
        let first = emulator.StandardOutput.ReadLineAsync()

        if not (first.Wait(TimeSpan.FromSeconds 30.0)) || isNull first.Result then
            raise (StepFailed "kinesalite did not start")

        printfn "kinesalite (pid %d) at %s" emulator.Id endpoint

        let withCredentials (psi: ProcessStartInfo) =
            // kinesalite checks that requests are signed, not by whom.
            if String.IsNullOrEmpty(Environment.GetEnvironmentVariable "AWS_ACCESS_KEY_ID") then
                psi.Environment["AWS_ACCESS_KEY_ID"] <- "AKIDLOCAL"
                psi.Environment["AWS_SECRET_ACCESS_KEY"] <- "local"

            psi

        let runWithCredentials exe (argv: string list) =
            printfn "> %s %s" exe (String.Join(" ", argv))
            use p = Process.Start(withCredentials (ProcessStartInfo(exe, argv, WorkingDirectory = root, UseShellExecute = false)))
            p.WaitForExit()

            if p.ExitCode <> 0 then
                raise (StepFailed(sprintf "%s exited with %d" exe p.ExitCode))

        runWithCredentials
            (Path.Combine(root, "artifacts", "samples", "producer", "producer"))
            [ "--endpoint"; endpoint; "--stream"; stream; "--shards"; "2"; "--records"; string records; "--region"; "us-east-1" ]

        runWithCredentials
            "dotnet"
            [
                tool
                "--properties"
                "samples/csharp-consumer.properties"
                "--kinesis-endpoint"
                endpoint
                "--stream"
                stream
                "--stop-after"
                string records
                "--state-dir"
                Path.Combine("artifacts", "pipeline-state")
                "--fresh"
                "--quiet"
                "--no-progress"
            ]
    finally
        if not emulator.HasExited then
            emulator.Kill true
            emulator.WaitForExit 5000 |> ignore

/// The whole-process benchmark (bench/ProcessBench): publishes the samples and the bare reference loop, installs the
/// official Node binding's processor with npm into artifacts/bench/node, builds kcl-local (the C# sample also runs
/// under it) and kcl-bootstrap (timed over a generated jar repository), and prints the Markdown tables. Arguments
/// after `--` go to the benchmark, e.g. `bench -- --runs 5 --scale 0.5`.
let bench () =
    restore ()
    // The consumers as a user should deploy them: with the opt-in fast start-up publish (samples/KclChild.props), on
    // the machines whose runtime packs the feed holds; elsewhere the plain framework-dependent publish.
    let fast =
        Runtime.InteropServices.RuntimeInformation.RuntimeIdentifier = "linux-x64"
        || Runtime.InteropServices.RuntimeInformation.RuntimeIdentifier = "win-x64"

    for sample in [ "CSharpConsumer"; "FSharpConsumer" ] do
        let project = Path.Combine("samples", sample, sample + ".fsproj")

        let project =
            if File.Exists(Path.Combine(root, project)) then project else Path.ChangeExtension(project, ".csproj")

        let name = (projectInfo project).AssemblyName

        exec
            "dotnet"
            ([ "publish"; project; "-c"; "Release"; "-o"; Path.Combine("artifacts", "bench", "samples", name) ]
             @ (if fast then [ "-p:KclFastStartup=true" ] else [])
             @ (if locked then [ "-p:RestoreLockedMode=true" ] else []))

    exec "dotnet" [ "publish"; "bench/BareLoop/BareLoop.csproj"; "-c"; "Release"; "-o"; "artifacts/bench/bare-loop" ]
    let node = Path.Combine(root, "artifacts", "bench", "node")
    npmInstall (Path.Combine(root, "bench", "NodeProcessor")) node

    let kclLocal = localTool ()
    let bootstrap = bootstrapTool ()
    let project = Path.Combine("bench", "ProcessBench", "ProcessBench.fsproj")
    exec "dotnet" [ "build"; project; "-c"; "Release" ]

    exec
        "dotnet"
        ([ (projectInfo project).TargetPath
           "--root"
           root
           "--node"
           node
           "--local"
           kclLocal
           "--bootstrap"
           bootstrap
           "--samples"
           "bench/samples" ]
         @ runnerArgs)

// The default job when no target is given.
let mainJob = [ "samples"; "demo" ]

let rec help () =
    printfn "usage: dotnet fsi build.fsx [target] [--locked] [-- test runner args]"
    printfn ""

    for name, description, _ in targets () do
        printfn "  %-10s %s" name description

    printfn ""
    printfn "With no target: %s." (String.Join(" then ", mainJob))

// Adding a target: write its function above and add one line here.
and targets () : (string * string * (unit -> unit)) list =
    [
        "build", "restore tools and packages (locked with CI=true or --locked), build Kcl.slnx in Release", build
        "test", "build, publish the samples, run every tests/*Tests project, end with 'N passed, N failed, N skipped'", test
        "samples", "publish every samples/* project to artifacts/samples/<assembly-name>/", samples
        "fetch-jars", "fetch and verify the daemon's jars into the cache, print the classpath (-- kcl-bootstrap options)", fetchJars
        "run-daemon", "run kcl-bootstrap: print the daemon's command, or launch it with --execute (-- kcl-bootstrap options)", runDaemon
        "local", "run kcl-local (the local daemon) with the arguments after --, e.g. local -- -p FILE --generate 1000", local
        "pack", "build, then pack the libraries and the kcl-bootstrap/kcl-local tools into artifacts/packages/", pack

        "bench", "the whole-process benchmark: both samples, a bare .NET loop and the Node binding (-- --runs N --scale F)", bench
        "pipeline", "kinesalite on 127.0.0.1 (npm), the Producer putting 1000 records, kcl-local reading them into the C# sample", pipeline
        "demo", "run both published samples under kcl-local over a generated 4-shard stream, fresh state each", demo
        "help", "list the targets", help
    ]

let runTarget name =
    match targets () |> List.tryFind (fun (n, _, _) -> n = name) with
    | Some(_, _, f) -> f ()
    | None ->
        eprintfn
            "error: unknown target '%s'; targets: %s"
            name
            (String.Join(", ", targets () |> List.map (fun (n, _, _) -> n)))

        exit 2

try
    match target with
    | Some t -> runTarget t
    | None -> mainJob |> List.iter runTarget
with StepFailed msg ->
    eprintfn "error: %s" msg
    exit 1
