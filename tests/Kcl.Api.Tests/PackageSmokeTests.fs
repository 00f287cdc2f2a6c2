/// The packed packages as a user gets them: packed from the Release build, added by exact version to fresh C# and F#
/// projects outside the repository through a nuget.config that names the pack folder and the machine's own feeds,
/// and run under kcl-local installed as a local tool from the same folder. Each run packs a unique prerelease
/// version, so no package cached by an earlier run can stand in for this one.
module Kcl.Api.Tests.PackageSmokeTests

open System
open System.Diagnostics
open System.IO
open System.IO.Compression
open System.Text
open System.Threading.Tasks
open Xunit

type private Outcome = { Code: int; Output: string }

/// Runs a command in a folder with its output captured; kills its process tree when it outlives the timeout.
let private runIn (dir: string) (timeout: TimeSpan) (exe: string) (args: string list) =
    let psi =
        ProcessStartInfo(exe, args, WorkingDirectory = dir, UseShellExecute = false)

    psi.RedirectStandardOutput <- true
    psi.RedirectStandardError <- true
    psi.RedirectStandardInput <- true
    // No build servers or reused MSBuild nodes left behind holding the output pipes open.
    psi.Environment["MSBUILDDISABLENODEREUSE"] <- "1"
    psi.Environment["DOTNET_CLI_USE_MSBUILD_SERVER"] <- "0"
    psi.Environment["DOTNET_NOLOGO"] <- "1"
    psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] <- "1"
    psi.Environment["DOTNET_SKIP_FIRST_TIME_EXPERIENCE"] <- "1"
    let output = StringBuilder()
    use p = new Process(StartInfo = psi)

    let append (e: DataReceivedEventArgs) =
        if not (isNull e.Data) then
            lock output (fun () -> output.AppendLine e.Data |> ignore)

    p.OutputDataReceived.Add append
    p.ErrorDataReceived.Add append
    p.Start() |> ignore
    p.StandardInput.Close()
    p.BeginOutputReadLine()
    p.BeginErrorReadLine()

    if p.WaitForExit timeout then
        p.WaitForExit(TimeSpan.FromSeconds 10.) |> ignore

        {
            Code = p.ExitCode
            Output = lock output (fun () -> output.ToString())
        }
    else
        p.Kill true
        p.WaitForExit(TimeSpan.FromSeconds 10.) |> ignore

        failwithf
            "%s %s in %s did not finish within %O:\n%s"
            exe
            (String.Join(" ", args))
            dir
            timeout
            (lock output (fun () -> output.ToString()))

let private exec dir (timeout: TimeSpan) exe args =
    let outcome = runIn dir timeout exe args

    if outcome.Code <> 0 then
        failwithf "%s %s in %s exited with %d:\n%s" exe (String.Join(" ", args)) dir outcome.Code outcome.Output

    outcome.Output

let private minutes (m: float) = TimeSpan.FromMinutes m

/// The machine's enabled package sources, as `dotnet nuget list source` reports them (E = enabled).
let private machineSources (dir: string) =
    (exec dir (minutes 1.) "dotnet" [ "nuget"; "list"; "source"; "--format"; "short" ]).Split('\n')
    |> Array.map (fun l -> l.Trim())
    |> Array.filter (fun l -> l.StartsWith "E ")
    |> Array.map (fun l -> l.Substring(2).Trim())
    |> List.ofArray

let private writeConfig (dir: string) (packages: string) (sources: string list) =
    let add i (url: string) =
        sprintf "    <add key=\"machine-%d\" value=\"%s\" />" i (Security.SecurityElement.Escape url)

    File.WriteAllText(
        Path.Combine(dir, "nuget.config"),
        String.Join(
            "\n",
            [
                yield "<?xml version=\"1.0\" encoding=\"utf-8\"?>"
                yield "<configuration>"
                yield "  <packageSources>"
                yield "    <clear />"
                yield sprintf "    <add key=\"kcl-packed\" value=\"%s\" />" (Security.SecurityElement.Escape packages)
                yield! sources |> List.mapi add
                yield "  </packageSources>"
                yield "</configuration>"
            ]
        )
    )

    // Stop MSBuild's upward search for these files at the temporary folder; keep the F# SDK's bundled
    // FSharp.Core out of the machine's package cache (see Directory.Build.props in the repository).
    File.WriteAllText(
        Path.Combine(dir, "Directory.Build.props"),
        "<Project><PropertyGroup><DisableImplicitLibraryPacksFolder>true</DisableImplicitLibraryPacksFolder></PropertyGroup></Project>\n"
    )

    File.WriteAllText(Path.Combine(dir, "Directory.Build.targets"), "<Project />\n")
    File.WriteAllText(Path.Combine(dir, "Directory.Packages.props"), "<Project />\n")

let private csharpProgram =
    """using Kcl;

return await KclProcess.RunAsync(new Counter());

sealed class Counter : IShardRecordProcessor
{
    long count;

    public Task InitializeAsync(InitializationInput input, CancellationToken cancellationToken) => Task.CompletedTask;

    public async Task ProcessRecordsAsync(ProcessRecordsInput input, CancellationToken cancellationToken)
    {
        count += input.Records.Count;
        await input.Checkpointer.CheckpointAsync(cancellationToken);
    }

    public Task LeaseLostAsync(LeaseLostInput input, CancellationToken cancellationToken) => Task.CompletedTask;

    public Task ShardEndedAsync(ShardEndedInput input, CancellationToken cancellationToken) =>
        input.Checkpointer.CheckpointAsync(cancellationToken);

    public Task ShutdownRequestedAsync(ShutdownRequestedInput input, CancellationToken cancellationToken) =>
        input.Checkpointer.CheckpointAsync(cancellationToken);
}
"""

let private fsharpProgram =
    """open Kcl.Core

let update (count: int64) (event: Event) : int64 * Command list =
    match event with
    | Event.RecordsReceived(records, _) -> count + int64 records.Length, [ Command.Checkpoint CheckpointTarget.LastDelivered ]
    | Event.ShardEnded
    | Event.ShutdownRequested -> count, [ Command.Checkpoint CheckpointTarget.LastDelivered ]
    | Event.CheckpointFailed(_, failure) -> count, [ Command.Escalate failure ]
    | _ -> count, []

[<EntryPoint>]
let main _ = Processor.create 0L update |> Processor.run
"""

let private entryText (package: string) (suffix: string) =
    use zip = ZipFile.OpenRead package
    let entry = zip.Entries |> Seq.find (fun e -> e.FullName.EndsWith(suffix: string))
    use reader = new StreamReader(entry.Open(), Encoding.Latin1)
    reader.ReadToEnd()

/// Every package `pack` produces: the libraries and the two tools.
let private packageIds =
    [
        "Kcl.Core"
        "Kcl.CSharp"
        "Kcl.Testing"
        "Kcl.Bootstrap"
        "Kcl.Local"
        "Kcl.Kinesis"
        "kcl-bootstrap"
        "kcl-local"
    ]

/// What every package must carry (licence, readme, repository with its commit, supported releases, XML docs,
/// SourceLink in the symbols), and the dependency rule: only the tools bring Argu and Spectre.Console.
let private checkMetadata (packages: string) (version: string) =
    for id in packageIds do
        let package = Path.Combine(packages, sprintf "%s.%s.nupkg" id version)
        let nuspec = entryText package ".nuspec"
        Assert.Contains("<license type=\"expression\">Apache-2.0</license>", nuspec)
        Assert.Contains("<readme>README.md</readme>", nuspec)
        Assert.Matches("<repository type=\"git\" url=\"https://[^\"]+\"[^>]* commit=\"[0-9a-f]{40}\"", nuspec)
        Assert.Contains("KCL 2.1 and later", nuspec)

        if not (id.StartsWith "kcl-") then
            Assert.NotEmpty(entryText package (id + ".xml"))
            Assert.DoesNotContain("id=\"Argu\"", nuspec)
            Assert.DoesNotContain("id=\"Spectre.Console\"", nuspec)
            let pdb = entryText (Path.ChangeExtension(package, ".snupkg")) (id + ".pdb")
            Assert.True(pdb.Contains "\"documents\":{", id + "'s symbols have no SourceLink")

let private packageCache () =
    match Environment.GetEnvironmentVariable "NUGET_PACKAGES" with
    | null
    | "" -> Path.Combine(Environment.GetFolderPath Environment.SpecialFolder.UserProfile, ".nuget", "packages")
    | dir -> dir

[<Fact(Timeout = 900000)>]
let ``The packed packages build a C# and an F# processor outside the repository, and both run under kcl-local installed as a tool``
    ()
    : Task =
    task {
        let stopwatch = Stopwatch.StartNew()
        let repo = ApiTests.repoRoot
        let suffix = "smoke." + DateTime.UtcNow.ToString "yyyyMMddHHmmss"

        let work =
            Path.Combine(Path.GetTempPath(), "kcl-smoke-" + Guid.NewGuid().ToString("N").Substring(0, 8))

        let packages = Path.Combine(work, "packages")
        Directory.CreateDirectory packages |> ignore
        let mutable version = ""

        try
            // From the Release build that `build.fsx test` made before running the tests.
            exec
                repo
                (minutes 5.)
                "dotnet"
                [
                    "pack"
                    "Kcl.slnx"
                    "-c"
                    "Release"
                    "--no-build"
                    "-o"
                    packages
                    "-p:VersionSuffix=" + suffix
                ]
            |> ignore

            let core =
                Directory.GetFiles(packages, "Kcl.Core.*.nupkg")
                |> Array.exactlyOne
                |> Path.GetFileName

            version <- core.Substring("Kcl.Core.".Length, core.Length - "Kcl.Core.".Length - ".nupkg".Length)
            Assert.EndsWith(suffix, version)

            for id in packageIds do
                Assert.True(
                    File.Exists(Path.Combine(packages, sprintf "%s.%s.nupkg" id version)),
                    id + " was not packed"
                )

                Assert.True(
                    File.Exists(Path.Combine(packages, sprintf "%s.%s.snupkg" id version)),
                    id + " has no symbols"
                )

            checkMetadata packages version
            writeConfig work packages (machineSources work)

            exec work (minutes 1.) "dotnet" [ "new"; "tool-manifest" ] |> ignore

            exec
                work
                (minutes 3.)
                "dotnet"
                [
                    "tool"
                    "install"
                    "kcl-local"
                    "--version"
                    version
                    "--add-source"
                    packages
                ]
            |> ignore

            let app (name: string) (language: string) (package: string) (program: string) (programFile: string) =
                let dir = Path.Combine(work, name)

                exec
                    work
                    (minutes 2.)
                    "dotnet"
                    [ "new"; "console"; "--language"; language; "--output"; name; "--no-restore" ]
                |> ignore

                File.WriteAllText(Path.Combine(dir, programFile), program)

                exec dir (minutes 3.) "dotnet" [ "add"; "package"; package; "--version"; version ]
                |> ignore

                let out = Path.Combine(work, "out", name)
                exec dir (minutes 4.) "dotnet" [ "build"; "-c"; "Release"; "-o"; out ] |> ignore

                File.WriteAllText(
                    Path.Combine(work, name + ".properties"),
                    String.Join(
                        "\n",
                        [
                            "executableName = " + Path.Combine(out, name)
                            "streamName = smoke"
                            "applicationName = smoke-" + name
                            "initialPositionInStream = TRIM_HORIZON"
                            "AwsCredentialsProvider = DefaultCredentialsProvider"
                            "regionName = us-east-1"
                            ""
                        ]
                    )
                )

                let run =
                    runIn
                        work
                        (minutes 2.)
                        "dotnet"
                        [
                            "kcl-local"
                            "-p"
                            name + ".properties"
                            "--generate"
                            "200"
                            "--shards"
                            "2"
                            "--fresh"
                            "--state-dir"
                            Path.Combine(work, "state")
                            "--no-progress"
                        ]

                Assert.True(
                    run.Code = 0,
                    sprintf "kcl-local over the %s processor exited with %d:\n%s" name run.Code run.Output
                )

                Assert.Contains("200 delivered, 200 checkpointed", run.Output)

            app "csharpsmoke" "C#" "Kcl.CSharp" csharpProgram "Program.cs"
            app "fsharpsmoke" "F#" "Kcl.Core" fsharpProgram "Program.fs"
            TestContext.Current.SendDiagnosticMessage("package smoke test: {0:F0} s", stopwatch.Elapsed.TotalSeconds)
        finally
            // This run's packages leave the machine's cache with it; the temporary folder goes too.
            if version <> "" then
                for id in
                    [
                        "kcl.core"
                        "kcl.csharp"
                        "kcl.testing"
                        "kcl.bootstrap"
                        "kcl.local"
                        "kcl-bootstrap"
                        "kcl-local"
                    ] do
                    let dir = Path.Combine(packageCache (), id, version)

                    if Directory.Exists dir then
                        try
                            Directory.Delete(dir, true)
                        with _ ->
                            ()

            try
                Directory.Delete(work, true)
            with _ ->
                ()
    }
