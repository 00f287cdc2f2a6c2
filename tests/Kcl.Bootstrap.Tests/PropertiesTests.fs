/// Properties parsing and validation, with good and bad files.
module Kcl.Bootstrap.Tests.PropertiesTests

open Kcl.Bootstrap
open Xunit

let private files =
    set [ "/work/bin/processor"; "/usr/bin/dotnet"; "/work/my app/processor" ]

let private env name =
    Map.tryFind name (Map.ofList [ "PATH", "/usr/bin:/bin" ])

let private parse text =
    Properties.parse text |> Result.defaultWith failwith

let private validate text =
    Properties.validate Platform.unix "/work" env files.Contains (parse text)

let private errors text =
    validate text
    |> List.filter (fun f -> f.Severity = Severity.Error)
    |> List.map _.Message

let private warnings text =
    validate text
    |> List.filter (fun f -> f.Severity = Severity.Warning)
    |> List.map _.Message

let private good =
    "executableName = bin/processor --flag\n"
    + "applicationName: app\n"
    + "streamArn arn:aws:kinesis:us-east-1:1:stream/s\n"
    + "awsCredentialsProvider = DefaultCredentialsProvider\n"
    + "shutdownGraceMillis = 10000\n"

[<Fact>]
let ``Java properties syntax: separators, comments, continuations and escapes`` () =
    let p =
        parse "# c\n! c\na=1\nb : 2\nc 3\nlong = x\\\n    y\nesc = tab\\tu\\u00e9\nempty\n"

    Assert.Equal<Map<string, string>>(
        Map.ofList [ "a", "1"; "b", "2"; "c", "3"; "long", "xy"; "esc", "tab\tué"; "empty", "" ],
        p
    )

[<Fact>]
let ``A good file has no finding`` () = Assert.Empty(validate good)

[<Fact>]
let ``Each missing required key is an error naming it`` () =
    let all = errors "shutdownGraceMillis = 1\n"
    Assert.Equal(4, all.Length)

    for key in
        [
            "executableName"
            "applicationName"
            "streamName or streamArn"
            "AwsCredentialsProvider"
        ] do
        Assert.Contains(all, fun m -> m.StartsWith key)

[<Fact>]
let ``A program path with a space is an error, a missing program a warning`` () =
    let spaced = good.Replace("bin/processor --flag", "/work/my app/processor")
    Assert.Contains(errors spaced, fun m -> m.Contains "'/work/my app/processor' contains a space")
    let quoted = good.Replace("bin/processor --flag", "\"/some where/p\"")
    Assert.Contains(errors quoted, fun m -> m.Contains "quote")
    let missing = good.Replace("bin/processor", "bin/gone")

    Assert.Equal<string list>(
        [
            "executableName: the program 'bin/gone' does not exist (resolved against /work)"
        ],
        warnings missing
    )

    Assert.Empty(validate (good.Replace("bin/processor --flag", "dotnet Processor.dll")))
    Assert.Contains(warnings (good.Replace("bin/processor --flag", "python3 x.py")), fun m -> m.Contains "the PATH")

[<Fact>]
let ``Unknown keys get a did-you-mean, and the known traps are warned about`` () =
    let w =
        warnings (
            good
            + "streamname = x\nmaxRecord = 5\nsomethingElseEntirely = 1\ncleanupLeasesUponShardCompletion = false\n"
        )

    Assert.Contains(w, fun m -> m.Contains "'streamname' (did you mean 'streamName'?)")
    Assert.Contains(w, fun m -> m.Contains "'maxRecord' (did you mean 'maxRecords'?)")
    Assert.Contains(w, fun m -> m.Contains "unknown key 'somethingElseEntirely'; the daemon ignores")
    Assert.Contains(w, fun m -> m.StartsWith "cleanupLeasesUponShardCompletion=false is ignored")

    Assert.Contains(
        warnings (good.Replace("shutdownGraceMillis = 10000\n", "")),
        fun m -> m.StartsWith "shutdownGraceMillis is unset"
    )
