/// The samples' publish settings for start-up (samples/KclChild.props): the default stays framework-dependent, so it
/// restores anywhere; `-p:KclFastStartup=true` turns on the self-contained, trimmed, composite ReadyToRun publish that
/// `build.fsx bench` measures. Checked by evaluating the projects, which costs seconds; the publish itself takes
/// minutes and is exercised by the bench target.
module Kcl.Api.Tests.StartupPublishTests

open System
open System.Diagnostics
open System.IO
open System.Text.Json
open Xunit

let private properties =
    [
        "RuntimeIdentifier"
        "RuntimeIdentifiers"
        "SelfContained"
        "PublishTrimmed"
        "TrimMode"
        "PublishReadyToRun"
        "PublishReadyToRunComposite"
        "InvariantGlobalization"
        "NETCoreSdkRuntimeIdentifier"
        "PublishReadyToRunCrossgen2ExtraArgs"
        "TieredPGO"
    ]

/// The evaluated properties of a project under the given extra arguments.
let private evaluate (project: string) (extra: string list) =
    let psi =
        ProcessStartInfo(
            "dotnet",
            [ "msbuild"; project; "-p:Configuration=Release" ]
            @ (properties |> List.map (fun p -> "-getProperty:" + p))
            @ extra,
            WorkingDirectory = ApiTests.repoRoot,
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true
        )

    psi.Environment["MSBUILDDISABLENODEREUSE"] <- "1"
    psi.Environment["DOTNET_CLI_USE_MSBUILD_SERVER"] <- "0"
    use p = Process.Start psi
    let errors = p.StandardError.ReadToEndAsync()
    let out = p.StandardOutput.ReadToEnd()

    if not (p.WaitForExit(TimeSpan.FromMinutes 2.)) then
        p.Kill true
        failwithf "evaluating %s did not finish" project

    Assert.True((p.ExitCode = 0), sprintf "evaluating %s failed:\n%s\n%s" project out errors.Result)
    use doc = JsonDocument.Parse out
    let found = doc.RootElement.GetProperty "Properties"

    properties
    |> List.map (fun name -> name, found.GetProperty(name).GetString())
    |> Map.ofList

let private samples =
    [
        Path.Combine("samples", "CSharpConsumer", "CSharpConsumer.csproj")
        Path.Combine("samples", "FSharpConsumer", "FSharpConsumer.fsproj")
    ]

[<Fact>]
let ``By default the samples publish framework-dependent and portable, with both feed RIDs declared for locked restore``
    ()
    =
    for project in samples do
        let p = evaluate project []
        Assert.Equal("", p["RuntimeIdentifier"])
        Assert.Equal("linux-x64;win-x64", p["RuntimeIdentifiers"])
        Assert.NotEqual<string>("true", p["SelfContained"])
        Assert.NotEqual<string>("true", p["PublishTrimmed"])
        Assert.NotEqual<string>("true", p["PublishReadyToRun"])
        Assert.Equal("true", p["InvariantGlobalization"])
        Assert.Equal("", p["PublishReadyToRunCrossgen2ExtraArgs"])
        Assert.NotEqual<string>("false", p["TieredPGO"])

[<Fact>]
let ``KclFastStartup publishes the samples self-contained for this machine, partly trimmed, as one composite ReadyToRun image for x86-64-v3, without the instrumented tier``
    ()
    =
    for project in samples do
        let p = evaluate project [ "-p:KclFastStartup=true" ]
        Assert.NotEqual<string>("", p["NETCoreSdkRuntimeIdentifier"])
        Assert.Equal(p["NETCoreSdkRuntimeIdentifier"], p["RuntimeIdentifier"])
        Assert.Equal("true", p["SelfContained"])
        Assert.Equal("true", p["PublishTrimmed"])
        Assert.Equal("partial", p["TrimMode"])
        Assert.Equal("true", p["PublishReadyToRun"])
        Assert.Equal("true", p["PublishReadyToRunComposite"])
        Assert.Equal("--instruction-set:x86-64-v3", p["PublishReadyToRunCrossgen2ExtraArgs"])
        Assert.Equal("false", p["TieredPGO"])

[<Fact>]
let ``KclInstructionSet chooses the instruction set of the fast publish, for machines without AVX2`` () =
    let p =
        evaluate samples.Head [ "-p:KclFastStartup=true"; "-p:KclInstructionSet=x86-64-v2" ]

    Assert.Equal("--instruction-set:x86-64-v2", p["PublishReadyToRunCrossgen2ExtraArgs"])
