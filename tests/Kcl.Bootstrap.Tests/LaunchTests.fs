/// The tool end to end with a real java: the stand-in daemon compiled by javac, fetched from 127.0.0.1, launched.
module Kcl.Bootstrap.Tests.LaunchTests

open System
open System.IO
open Kcl.Bootstrap
open Kcl.Bootstrap.Tests.Helpers
open Kcl.Bootstrap.Tests.Processes
open Xunit

let private seconds (n: float) = TimeSpan.FromSeconds n

let private setUp () =
    let s = standIn.Force()
    let dir = new TempDir("kcl bootstrap launch")
    let properties = writeProperties (dir.Sub "props dir") s.Processor []
    s, dir, properties, dir.Sub "jar cache"

let private isReady (line: string) = line.StartsWith "stand-in: ready"

let private signalled (signal: int) (ownGroup: bool) =
    let s, dir, properties, cache = setUp ()
    use dir = dir
    use tool = startTool ownGroup (toolArgs s properties cache [ "--execute" ])
    tool.WaitForLine(isReady, seconds 60.0)
    // The bootstrap replaced itself with java: the pid it was started with is the JVM's.
    Assert.Contains(sprintf "stand-in: ready pid=%d" tool.Pid, tool.Out)
    let target = if ownGroup then -tool.Pid else tool.Pid
    Assert.Equal(0, kill (target, signal))
    let code = tool.Exit(seconds 30.0)
    Assert.True(List.contains "stand-in: shutdownRequested answered" tool.Out, tool.Transcript)
    Assert.True(List.contains "processor: shutdownRequested" tool.Err, tool.Transcript)
    Assert.Equal(128 + signal, code)

[<Fact>]
let ``SIGTERM to the bootstrap reaches the JVM, whose shutdown sends shutdownRequested to the processor`` () =
    signalled 15 false

[<Fact>]
let ``SIGINT to the whole process group, as Ctrl-C sends it, reaches the JVM and the processor answers shutdownRequested``
    ()
    =
    signalled 2 true

[<Fact>]
let ``The JVM's exit code comes back through --execute, with properties and cache paths holding spaces`` () =
    let s, dir, _, cache = setUp ()
    use dir = dir

    let properties =
        writeProperties (dir.Sub "other props") s.Processor [ "standInExitCode = 7" ]

    let code, out, err =
        runToEnd "dotnet" (toolArgs s properties cache [ "--execute" ]) (seconds 60.0)

    Assert.True((7 = code), sprintf "exit %d\n%A\n%A" code out err)
    Assert.Contains("stand-in: exiting with 7", out)
    Assert.Contains("stand-in: properties folder on classpath: true", out)
    // Java 17 defaults to the locale's charset; the bootstrap asks for UTF-8.
    Assert.Contains("stand-in: file.encoding=UTF-8", out)
    Assert.Contains(" ", cache)
    Assert.True(File.Exists(Classpath.jarPath Platform.current cache "3.1.3" multilang))

[<Fact>]
let ``SIGKILL of the bootstrap leaves no JVM running`` () =
    let s, dir, properties, cache = setUp ()
    use dir = dir
    use tool = startTool false (toolArgs s properties cache [ "--execute" ])
    tool.WaitForLine(isReady, seconds 60.0)
    Assert.Equal(0, kill (tool.Pid, 9))
    tool.Exit(seconds 30.0) |> ignore

    Assert.False(
        Directory.Exists(sprintf "/proc/%d" tool.Pid)
        && File.ReadAllText(sprintf "/proc/%d/cmdline" tool.Pid).Contains cache
    )

    Assert.False(anyProcessMentions cache, "a process still names the cache folder")

[<Fact>]
let ``The printed command is shell-quoted: run through sh it launches the daemon with paths holding spaces`` () =
    let s, dir, _, cache = setUp ()
    use dir = dir

    let properties =
        writeProperties (dir.Sub "props dir") s.Processor [ "standInExitCode = 3" ]

    let code, out, err =
        runToEnd "dotnet" (toolArgs s properties cache []) (seconds 60.0)

    Assert.True((0 = code), sprintf "%A %A" out err)
    let line = List.exactlyOne out
    Assert.Contains("'" + properties + "'", line)
    Assert.Contains("-Dfile.encoding=UTF-8", line)
    let code, out, _ = runToEnd "sh" [ "-c"; line ] (seconds 60.0)
    Assert.Equal(3, code)
    Assert.Contains("stand-in: properties folder on classpath: true", out)

[<Fact>]
let ``--print-classpath lists the manifest's jars, the extras and nothing else from the cache`` () =
    let s, dir, properties, cache = setUp ()
    use dir = dir
    // A stale jar of another version in the same folder must not appear.
    let jarFolder =
        Path.GetDirectoryName(Classpath.jarPath Platform.current cache "3.1.3" multilang)

    Directory.CreateDirectory jarFolder |> ignore
    File.WriteAllText(Path.Combine(jarFolder, "amazon-kinesis-client-multilang-3.1.2.jar"), "stale")
    let extra = dir.Sub "extra classes"

    let code, out, err =
        runToEnd
            "dotnet"
            (toolArgs s properties cache [ "--print-classpath"; "--classpath-extra"; extra ])
            (seconds 60.0)

    Assert.True((0 = code), sprintf "%A" err)

    let expected =
        [
            Classpath.jarPath Platform.current cache "3.1.3" multilang
            extra
            Path.GetDirectoryName properties
        ]

    Assert.Equal<string list>(expected, (List.exactlyOne out).Split ':' |> List.ofArray)

[<Fact>]
let ``A Java older than the jars need is refused with exit code 4, naming both versions`` () =
    let s, dir, properties, cache = setUp ()
    use dir = dir
    let fake = Path.Combine(dir.Sub "fake java", "java")
    File.WriteAllText(fake, "#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    File.SetUnixFileMode(fake, UnixFileMode.UserRead ||| UnixFileMode.UserExecute)

    let code, _, err =
        runToEnd "dotnet" (toolArgs s properties cache [ "-j"; fake ]) (seconds 60.0)

    Assert.Equal(ExitCode.Java, code)
    let message = String.Join("\n", err)
    Assert.Contains("Java 17 or later is required", message)
    Assert.Contains("11.0.2", message)

[<Fact>]
let ``A Java 21 passes the preflight and gets no file.encoding flag`` () =
    let s, dir, properties, cache = setUp ()
    use dir = dir
    let fake = Path.Combine(dir.Sub "fake java", "java")
    File.WriteAllText(fake, "#!/bin/sh\necho 'openjdk version \"21.0.4\" 2024-07-16 LTS' >&2\n")
    File.SetUnixFileMode(fake, UnixFileMode.UserRead ||| UnixFileMode.UserExecute)

    let code, out, err =
        runToEnd "dotnet" (toolArgs s properties cache [ "-j"; fake ]) (seconds 60.0)

    Assert.True((0 = code), sprintf "%A" err)
    Assert.DoesNotContain("file.encoding", List.exactlyOne out)

[<Fact>]
let ``Invalid properties exit with 5, a missing jar with 3, and bad flags with 2`` () =
    let s, dir, _, cache = setUp ()
    use dir = dir
    let bad = Path.Combine(dir.Sub "bad", "bad.properties")
    File.WriteAllText(bad, "executableName = " + s.Processor + "\nstreamName = s\n")
    let code, _, err = runToEnd "dotnet" (toolArgs s bad cache []) (seconds 60.0)
    Assert.Equal(ExitCode.Properties, code)
    Assert.Contains(err, fun l -> l.Contains "applicationName is missing")

    let properties = writeProperties (dir.Sub "props") s.Processor []

    let code, _, err =
        runToEnd "dotnet" (toolArgs s properties cache [ "--offline" ]) (seconds 60.0)

    Assert.Equal(ExitCode.Fetch, code)
    Assert.Contains(err, fun l -> l.Contains(string multilang))

    let code, _, _ = runToEnd "dotnet" [ toolDll; "--no-such-flag" ] (seconds 60.0)
    Assert.Equal(ExitCode.Usage, code)
    let code, out, _ = runToEnd "dotnet" [ toolDll; "--help" ] (seconds 60.0)
    Assert.Equal(0, code)
    Assert.Contains(out, fun l -> l.Contains "--maven-repo")
