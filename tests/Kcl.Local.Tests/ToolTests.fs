/// The kcl-local tool as a process: its exit codes, its last stdout line, SIGTERM.
module Kcl.Local.Tests.ToolTests

open System
open System.Diagnostics
open System.IO
open System.Text.Json
open System.Threading.Tasks
open Xunit
open Kcl.Local
open Kcl.Local.Tests.Helpers

/// The tool's own build output, in the configuration and framework of this test's.
let private toolDll =
    let testProject = Path.Combine(repositoryRoot, "tests", "Kcl.Local.Tests")
    let output = Path.GetRelativePath(testProject, AppContext.BaseDirectory)
    Path.Combine(repositoryRoot, "Kcl.Local.Tool", output, "kcl-local.dll")

let private start (arguments: string list) =
    let info =
        ProcessStartInfo(
            "dotnet",
            WorkingDirectory = AppContext.BaseDirectory,
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true
        )

    info.ArgumentList.Add toolDll

    for a in arguments do
        info.ArgumentList.Add a

    Process.Start info

/// Runs the tool to its end (at most a minute) and returns its exit code, stdout lines and stderr.
let private runTool (arguments: string list) =
    task {
        use child = start arguments
        child.StandardInput.Close()
        let stdout = child.StandardOutput.ReadToEndAsync()
        let stderr = child.StandardError.ReadToEndAsync()
        do! child.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes 1.0)
        let! out = stdout
        let! err = stderr
        return child.ExitCode, out.Split('\n', StringSplitOptions.RemoveEmptyEntries) |> List.ofArray, err
    }

let private propertiesFile (lines: string list) =
    let file = Path.Combine(tempDir (), "test.properties")

    File.WriteAllLines(
        file,
        [
            "applicationName = tool-" + Guid.NewGuid().ToString("N")
            "streamName = test"
            "AwsCredentialsProvider = DefaultCredentialsProvider"
            "initialPositionInStream = TRIM_HORIZON"
            "regionName = us-east-1"
        ]
        @ lines
    )

    file

[<Fact>]
let ``A clean run exits 0, names the ignored keys and ends stdout with the summary`` () =
    task {
        let props = propertiesFile [ "executableName = python3 children/misbehave.py good" ]

        let! code, out, err =
            runTool
                [
                    "-p"
                    props
                    "--generate"
                    "40"
                    "--shards"
                    "2"
                    "--state-dir"
                    tempDir ()
                    "--no-progress"
                ]

        Assert.True((code = 0), err)
        Assert.Equal(1, out.Length)
        Assert.StartsWith("kcl-local tool-", out.Head)
        Assert.Contains("OK; 2 shards, 40 delivered, 40 checkpointed", out.Head)
        Assert.Contains("ignoring AwsCredentialsProvider", err)
        Assert.DoesNotContain("ignoring regionName", err)
    }

[<Fact>]
let ``A violation exits 1 and the JSON summary names it`` () =
    task {
        let props =
            propertiesFile [ "executableName = python3 children/misbehave.py no-shard-end" ]

        let! code, out, err =
            runTool
                [
                    "-p"
                    props
                    "--generate"
                    "10"
                    "--shards"
                    "1"
                    "--state-dir"
                    tempDir ()
                    "--json"
                ]

        Assert.Equal(1, code)
        Assert.Contains("missing SHARD_END checkpoint", err)
        use json = JsonDocument.Parse(List.last out)
        Assert.False(json.RootElement.GetProperty("clean").GetBoolean())
        let finding = json.RootElement.GetProperty("findings").[0]
        Assert.Equal("MissingShardEndCheckpoint", finding.GetProperty("kind").GetString())
        // The steady state, from the first batch to the child's exit, lies within the whole run.
        let streaming = json.RootElement.GetProperty("streamingSeconds").GetDouble()
        Assert.InRange(streaming, 0.0, json.RootElement.GetProperty("elapsedSeconds").GetDouble())
        Assert.True(json.RootElement.GetProperty("streamingRecordsPerSecond").GetDouble() > 0.0)
    }

[<Fact>]
let ``Usage errors exit 2 and invalid properties exit 5`` () =
    task {
        let good = propertiesFile [ "executableName = python3 children/misbehave.py good" ]
        let! noProperties, _, _ = runTool [ "--generate"; "1" ]
        let! noSource, _, _ = runTool [ "-p"; good ]
        let! both, _, _ = runTool [ "-p"; good; "--generate"; "1"; "--input"; "x" ]

        let! badFault, _, _ =
            runTool [ "-p"; good; "--generate"; "1"; "--inject-checkpoint-error"; "Throttling:0" ]

        let! unknownFlag, _, _ = runTool [ "--nope" ]

        let! invalid, _, err =
            runTool [ "-p"; propertiesFile [ "maxRecords = 99999" ]; "--generate"; "1" ]

        Assert.Equal<int list>([ 2; 2; 2; 2; 2 ], [ noProperties; noSource; both; badFault; unknownFlag ])
        Assert.Equal(5, invalid)
        Assert.Contains("Must provide an executable name", err)
    }

[<Fact>]
let ``NDJSON on stdin is delivered and SIGTERM mid-stream shuts down cleanly`` () =
    task {
        let props =
            propertiesFile [ "executableName = python3 children/misbehave.py good"; "maxRecords = 5" ]

        let state = tempDir ()

        use child =
            start
                [
                    "-p"
                    props
                    "--input"
                    "-"
                    "--shards"
                    "2"
                    "--state-dir"
                    state
                    "--json"
                    "--quiet"
                ]

        for i in 1..200 do
            child.StandardInput.WriteLine(sprintf """{"partitionKey":"k%d","text":"record %d"}""" i i)

        child.StandardInput.Flush()
        let stdout = child.StandardOutput.ReadToEndAsync()
        let stderr = child.StandardError.ReadToEndAsync()
        // Once a checkpoint is stored the children are running; stdin stays open, so the shards never end.

        let checkpointed () =
            Directory.EnumerateFiles(state, "*.leases.json")
            |> Seq.exists (fun f ->
                let text =
                    try
                        File.ReadAllText f
                    with _ ->
                        ""

                text.Contains "\"checkpoint\": \"49")

        let mutable attempts = 400

        while not (checkpointed ()) && attempts > 0 do
            attempts <- attempts - 1
            do! Task.Delay 50

        use term = Process.Start("kill", [ "-TERM"; string child.Id ])
        do! term.WaitForExitAsync()
        do! child.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes 1.0)
        let! out = stdout
        let! err = stderr
        Assert.True((child.ExitCode = 0), err)
        use json = JsonDocument.Parse(out.Trim().Split('\n') |> Array.last)
        let delivered = json.RootElement.GetProperty("delivered").GetInt32()
        Assert.InRange(delivered, 1, 200)
        // The child checkpoints every batch, so nothing delivered is left unchecked.
        Assert.Equal(delivered, json.RootElement.GetProperty("checkpointed").GetInt32())

        for shard in json.RootElement.GetProperty("shards").EnumerateArray() do
            Assert.Equal("lease lost", shard.GetProperty("ending").GetString())
    }
