/// The public API baseline: api/<Assembly>.txt holds each library's listing, and a change to the public surface
/// fails here until the listing is updated in the same commit. Run with KCL_API_ACCEPT=1 to rewrite the files.
module Kcl.Api.Tests.ApiTests

open System
open System.IO
open System.Reflection
open Xunit

/// The repository root: the nearest folder above the test binary that holds Kcl.slnx.
let repoRoot =
    let rec up (dir: DirectoryInfo) =
        if isNull dir then
            failwith "Kcl.slnx not found above the test binary"
        elif File.Exists(Path.Combine(dir.FullName, "Kcl.slnx")) then
            dir.FullName
        else
            up dir.Parent

    up (DirectoryInfo AppContext.BaseDirectory)

let private accept = Environment.GetEnvironmentVariable "KCL_API_ACCEPT" = "1"

let libraries =
    [ "Kcl.Core"; "Kcl.CSharp"; "Kcl.Testing"; "Kcl.Bootstrap"; "Kcl.Local"; "Kcl.Kinesis" ]

let libraryData = TheoryData<string>(libraries)

let load (name: string) = Assembly.Load(AssemblyName name)

/// Lines only in one of two sorted listings, as a readable diff ("-" expected, "+" actual), in listing order.
let diff (expected: string list) (actual: string list) =
    let e = Set.ofList expected
    let a = Set.ofList actual

    [
        for line in expected do
            if not (a.Contains line) then
                yield "- " + line
        for line in actual do
            if not (e.Contains line) then
                yield "+ " + line
    ]

[<Theory; MemberData(nameof libraryData)>]
let ``The public API matches the checked-in listing api/<Assembly>.txt`` (assemblyName: string) =
    let actual = ApiListing.listing (load assemblyName)
    let file = Path.Combine(repoRoot, "api", assemblyName + ".txt")

    if accept then
        Directory.CreateDirectory(Path.GetDirectoryName file) |> ignore
        File.WriteAllText(file, String.Join("\n", actual) + "\n")
    else
        let expected =
            if File.Exists file then
                File.ReadAllText(file).Replace("\r\n", "\n").TrimEnd('\n').Split('\n')
                |> List.ofArray
            else
                []

        if expected <> actual then
            let changes = diff expected actual

            failwithf
                "The public API of %s differs from %s (%d line(s)); if the change is intended, run the tests with KCL_API_ACCEPT=1 and commit the file:\n%s"
                assemblyName
                (Path.GetRelativePath(repoRoot, file))
                changes.Length
                (String.Join(
                    "\n",
                    (if changes.IsEmpty then
                         [ "(same lines, different order)" ]
                     else
                         changes)
                ))

[<Fact>]
let ``Every library has a listing and every listing is a library`` () =
    let files =
        Directory.GetFiles(Path.Combine(repoRoot, "api"), "*.txt")
        |> Array.map Path.GetFileNameWithoutExtension
        |> Array.sort
        |> List.ofArray

    Assert.Equal<string list>(List.sort libraries, files)

[<Fact>]
let ``The listing names F# constructs, so an F# type in a C# signature shows in review`` () =
    let core = ApiListing.listing (load "Kcl.Core")
    Assert.Contains(core, fun l -> l.StartsWith "fsharp-union ")
    Assert.Contains(core, fun l -> l.StartsWith "fsharp-module ")

[<Fact>]
let ``The listing is stable: two listings of the same assembly are equal`` () =
    for name in libraries do
        Assert.Equal<string list>(ApiListing.listing (load name), ApiListing.listing (load name))

[<Fact>]
let ``No public signature of Kcl.CSharp mentions an F# type`` () =
    let mentions =
        (load "Kcl.CSharp").GetExportedTypes()
        |> Seq.collect ApiListing.fsharpMentions
        |> List.ofSeq

    Assert.True(mentions.IsEmpty, "F# types in Kcl.CSharp's public API:\n" + String.Join("\n", mentions))

/// The F#-only part of Kcl.Testing: the ProcessorTest module, for processors written with Processor.create.
let private fsharpOnlyTesting (t: Type) =
    t.FullName.StartsWith "Kcl.Testing.ProcessorTest"

[<Fact>]
let ``No public signature of Kcl.Testing mentions an F# type, except the F#-only ProcessorTest module`` () =
    let mentions =
        (load "Kcl.Testing").GetExportedTypes()
        |> Seq.filter (fsharpOnlyTesting >> not)
        |> Seq.collect ApiListing.fsharpMentions
        |> List.ofSeq

    Assert.True(mentions.IsEmpty, "F# types in Kcl.Testing's C#-facing API:\n" + String.Join("\n", mentions))

[<Fact>]
let ``The F#-type check finds F# types: Kcl.Core's Processor module mentions them`` () =
    let mentions =
        (load "Kcl.Core").GetExportedTypes()
        |> Seq.collect ApiListing.fsharpMentions
        |> List.ofSeq

    Assert.Contains(mentions, fun m -> m.Contains "FSharp")

[<Fact>]
let ``A changed member shows in the diff as one removed and one added line`` () =
    let actual = ApiListing.listing (load "Kcl.CSharp")
    let target = "static method RunAsync(processor: Kcl.IShardRecordProcessor): "
    Assert.Contains(actual, fun l -> l.Contains target)

    let expected =
        actual
        |> List.map (fun l ->
            if l.Contains target then
                l.Replace("RunAsync(", "Run(")
            else
                l)

    let changes = diff expected actual
    Assert.Equal(2, changes.Length)
    Assert.StartsWith("- ", changes[0])
    Assert.Contains("Run(processor", changes[0])
    Assert.StartsWith("+ ", changes[1])
    Assert.Contains("RunAsync(processor", changes[1])
