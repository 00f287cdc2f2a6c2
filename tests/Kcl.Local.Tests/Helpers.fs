/// Running the local daemon in tests: temporary properties and state, bounded runs, the published samples.
module Kcl.Local.Tests.Helpers

open System
open System.IO
open System.Threading
open System.Threading.Tasks
open Kcl.Core
open Kcl.Local

/// The repository root: the nearest folder above the test's output holding Kcl.slnx.
let repositoryRoot =
    let rec up (dir: DirectoryInfo) =
        if isNull dir then
            failwith "Kcl.slnx not found above the test's output"
        elif File.Exists(Path.Combine(dir.FullName, "Kcl.slnx")) then
            dir.FullName
        else
            up dir.Parent

    up (DirectoryInfo AppContext.BaseDirectory)

/// A published sample's executable, as the properties files name it.
let sample (name: string) =
    let file = Path.Combine(repositoryRoot, "artifacts", "samples", name, name)

    if not (File.Exists file) then
        failwithf "%s does not exist; run `dotnet fsi build.fsx samples` first" file

    file

/// A fresh temporary folder.
let tempDir () =
    let dir =
        Path.Combine(Path.GetTempPath(), "kcl-local-tests", Guid.NewGuid().ToString("N"))

    Directory.CreateDirectory dir |> ignore
    dir

/// A valid daemon configuration for this executableName, with extra properties lines.
let config (executableName: string) (extra: string list) =
    let text =
        String.Join(
            "\n",
            [
                "executableName = " + executableName
                "applicationName = test-" + Guid.NewGuid().ToString("N")
                "streamName = test"
                "AwsCredentialsProvider = DefaultCredentialsProvider"
                "initialPositionInStream = TRIM_HORIZON"
            ]
            @ extra
        )

    match
        JavaProperties.parse text
        |> Result.mapError List.singleton
        |> Result.bind DaemonConfig.ofProperties
    with
    | Ok config -> config
    | Error problems -> failwithf "bad test properties: %A" problems

/// Run settings for a generated stream with short bounds, the children started from the test's output folder.
let settings (config: DaemonConfig) (stateDir: string) (records: int) (shards: int) =
    { RunSettings.Create(
          config,
          stateDir,
          Source.Generated
              { GeneratorSettings.Default with
                  Records = records
              },
          shards
      ) with
        WorkingDirectory = AppContext.BaseDirectory
        DefaultWaitLimit = TimeSpan.FromSeconds 20.0
        ExitLimit = TimeSpan.FromSeconds 5.0
        // The tests read the sessions' transcripts.
        History = SessionHistory.Whole
    }

/// Runs the daemon, failing the test if the whole run takes longer than a minute.
let runWith (settings: RunSettings) (progress: ShardProgress[] -> unit) (kill: CancellationToken) =
    task {
        let! outcome =
            (LocalDaemon.run settings progress CancellationToken.None kill).WaitAsync(TimeSpan.FromMinutes 1.0)

        match outcome with
        | Ok summary -> return summary
        | Error problem -> return failwithf "the run could not start: %s" problem
    }

/// Runs the daemon to its end.
let runToEnd (settings: RunSettings) =
    runWith settings ignore CancellationToken.None

/// The findings of a summary, one per line, for failure messages.
let describe (summary: Summary) =
    String.Join("\n", (summary.Violations @ summary.Warnings) |> List.map string)
    + "\n"
    + Summary.toLine summary
