/// The pure parts: manifests, repository paths, cache paths, classpaths and command rendering, for both platforms.
module Kcl.Bootstrap.Tests.ManifestTests

open System
open FsCheck
open FsCheck.FSharp
open Kcl.Bootstrap
open Xunit

let private c g a v =
    { Group = g; Artifact = a; Version = v }

[<Fact>]
let ``The shipped releases hold 79 jars each, multilang first, and 3.1.3 is the default`` () =
    for version in [ "3.1.3"; "2.7.2" ] do
        let m = Manifest.release version |> Result.defaultWith failwith
        Assert.Equal(79, m.Entries.Length)
        Assert.Equal(version, m.KclVersion)
        Assert.Equal(c "software.amazon.kinesis" "amazon-kinesis-client-multilang" version, m.Entries.Head.Coordinate)

    Assert.Equal("3.1.3", Manifest.DefaultKclVersion)
    let old = Manifest.release "2.7.2" |> Result.defaultWith failwith
    Assert.Contains(old.Entries, fun e -> e.Coordinate = c "com.amazonaws" "aws-java-sdk-core" "1.12.668")

[<Fact>]
let ``An unshipped release is an error that lists the shipped ones`` () =
    match Manifest.release "9.9.9" with
    | Error e -> Assert.Contains("3.1.3, 2.7.2", e)
    | Ok _ -> failwith "expected an error"

[<Fact>]
let ``A coordinate maps to its Maven repository path and URL`` () =
    let x = c "software.amazon.awssdk" "netty-nio-client" "2.33.0"
    Assert.Equal("netty-nio-client-2.33.0.jar", Coordinate.fileName x)

    Assert.Equal(
        "software/amazon/awssdk/netty-nio-client/2.33.0/netty-nio-client-2.33.0.jar",
        Coordinate.repositoryPath x
    )

    for repo in [ "https://repo.example/maven2"; "https://repo.example/maven2/" ] do
        Assert.Equal(
            "https://repo.example/maven2/software/amazon/awssdk/netty-nio-client/2.33.0/netty-nio-client-2.33.0.jar",
            (Coordinate.url (Uri repo) x).AbsoluteUri
        )

[<Fact>]
let ``A flat list keeps its order, skips comments and reads pinned digests`` () =
    let text =
        "# the daemon\n"
        + "a.b:one:1.0\n\n"
        + "  c.d:two:2.0   sha1:"
        + String('A', 40)
        + "\r\n"
        + "e:three:3 sha256:"
        + String('b', 64)
        + "\n"

    let m = Manifest.parseLines text |> Result.defaultWith failwith

    Assert.Equal<Coordinate list>(
        [ c "a.b" "one" "1.0"; c "c.d" "two" "2.0"; c "e" "three" "3" ],
        m.Entries |> List.map _.Coordinate
    )

    Assert.Equal<Digest option list>(
        [
            None
            Some(Digest.Sha1(String('a', 40)))
            Some(Digest.Sha256(String('b', 64)))
        ],
        m.Entries |> List.map _.Pinned
    )

    Assert.Equal("custom", m.KclVersion)

[<Fact>]
let ``Bad manifest lines are errors naming the line`` () =
    for text, expected in
        [
            "a:b:1\nnot-a-coordinate\n", "line 2"
            "a:b:1 md5:abc\n", "pinned digest"
            "a:b:c:d\n", "group:artifact:version"
            "a:b:1\na:b:2\n", "more than once"
            "# nothing\n", "no jar"
        ] do
        match Manifest.parseLines text with
        | Error e -> Assert.Contains(expected, e)
        | Ok m -> failwithf "expected an error for %A, got %A" text m

[<Fact>]
let ``A flattened pom.xml substitutes properties and leaves out test dependencies`` () =
    let pom =
        """<?xml version="1.0"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <properties><kcl.version>2.7.2</kcl.version><netty.version>4.2.4.Final</netty.version></properties>
  <dependencies>
    <dependency><groupId>software.amazon.kinesis</groupId><artifactId>amazon-kinesis-client-multilang</artifactId><version>${kcl.version}</version></dependency>
    <dependency><groupId>io.netty</groupId><artifactId>netty-codec</artifactId><version>${netty.version}</version></dependency>
    <dependency><groupId>junit</groupId><artifactId>junit</artifactId><version>4.13</version><scope>test</scope></dependency>
  </dependencies>
</project>"""

    let m = Manifest.parse pom |> Result.defaultWith failwith
    Assert.Equal("2.7.2", m.KclVersion)

    Assert.Equal<Coordinate list>(
        [
            c "software.amazon.kinesis" "amazon-kinesis-client-multilang" "2.7.2"
            c "io.netty" "netty-codec" "4.2.4.Final"
        ],
        m.Entries |> List.map _.Coordinate
    )

    match Manifest.parsePom (pom.Replace("${netty.version}", "${nope}")) with
    | Error e -> Assert.Contains("${nope}", e)
    | Ok _ -> failwith "expected an undefined property error"

[<Fact>]
let ``Cache paths and classpaths follow each platform's separators, in manifest order`` () =
    let m =
        {
            KclVersion = "3.1.3"
            Entries =
                [
                    {
                        Coordinate = c "z.last" "zeta" "1"
                        Pinned = None
                    }
                    {
                        Coordinate = c "a.first" "alpha" "2"
                        Pinned = None
                    }
                ]
        }

    let unixJars = Classpath.jars Platform.unix "/var/cache/kcl" m

    Assert.Equal<string list>(
        [
            "/var/cache/kcl/3.1.3/z/last/zeta/1/zeta-1.jar"
            "/var/cache/kcl/3.1.3/a/first/alpha/2/alpha-2.jar"
        ],
        unixJars
    )

    Assert.Equal(
        "/var/cache/kcl/3.1.3/z/last/zeta/1/zeta-1.jar:/var/cache/kcl/3.1.3/a/first/alpha/2/alpha-2.jar:/opt/extra:/etc/my app",
        Classpath.build Platform.unix unixJars [ "/opt/extra" ] (Some "/etc/my app/daemon.properties")
    )

    let windowsJars = Classpath.jars Platform.windows @"C:\Users\me\cache\" m
    Assert.Equal(@"C:\Users\me\cache\3.1.3\z\last\zeta\1\zeta-1.jar", windowsJars.Head)

    Assert.Equal(
        @"C:\Users\me\cache\3.1.3\z\last\zeta\1\zeta-1.jar;C:\Users\me\cache\3.1.3\a\first\alpha\2\alpha-2.jar;C:\props",
        Classpath.build Platform.windows windowsJars [] (Some @"C:\props\daemon.properties")
    )

    Assert.Equal(".", Platform.directoryOf Platform.unix "daemon.properties")
    Assert.Equal("java.exe", Platform.windows.JavaExecutable)

let private spec =
    {
        Java = "/usr/lib/jvm/java 17/bin/java"
        JvmArgs = [ "-Xmx1g" ]
        Classpath = "/c/a.jar:/c/b b.jar"
        MainClass = "software.amazon.kinesis.multilang.MultiLangDaemon"
        PropertiesFile = "/etc/it's here/daemon.properties"
        LogConfiguration = Some "/etc/logback.xml"
        PropertiesAsOption = true
    }

[<Fact>]
let ``The command keeps each argument whole and renders quoted for sh or for Windows`` () =
    let command = Command.build spec

    Assert.Equal<string list>(
        [
            "-Xmx1g"
            "-cp"
            "/c/a.jar:/c/b b.jar"
            spec.MainClass
            "--properties-file"
            spec.PropertiesFile
            "--log-configuration"
            "/etc/logback.xml"
        ],
        command.Arguments
    )

    Assert.Equal(
        @"'/usr/lib/jvm/java 17/bin/java' -Xmx1g -cp '/c/a.jar:/c/b b.jar' software.amazon.kinesis.multilang.MultiLangDaemon --properties-file '/etc/it'\''s here/daemon.properties' --log-configuration /etc/logback.xml",
        Command.render Platform.unix command
    )

    Assert.Equal(
        "\"C:\\Program Files\\Java\\bin\\java.exe\"",
        Command.quoteWindows @"C:\Program Files\Java\bin\java.exe"
    )

    Assert.Equal("\"a \\\"b\\\" c\\\\\"", Command.quoteWindows "a \"b\" c\\")
    Assert.Equal(@"C:\plain\path", Command.quoteWindows @"C:\plain\path")

[<Fact>]
let ``Daemons before KCL 2.1 get the old main class and a positional properties file`` () =
    Assert.Equal("com.amazonaws.services.kinesis.multilang.MultiLangDaemon", Manifest.mainClass "1.14.10")
    Assert.False(Manifest.takesPropertiesOption "2.0.5")

    let old =
        Command.build
            { spec with
                PropertiesAsOption = false
                LogConfiguration = None
            }

    Assert.Equal(spec.PropertiesFile, List.last old.Arguments)
    Assert.DoesNotContain("--properties-file", old.Arguments)

/// Splits a line as sh would for the quoting render produces: bare words and single-quoted runs with '\'' joins.
let private shSplit (line: string) =
    let words = ResizeArray<string>()
    let current = Text.StringBuilder()
    let mutable i = 0
    let mutable inWord = false

    while i < line.Length do
        match line[i] with
        | ' ' ->
            if inWord then
                words.Add(current.ToString())
                current.Clear() |> ignore
                inWord <- false

            i <- i + 1
        | '\'' ->
            let close = line.IndexOf('\'', i + 1)
            current.Append(line, i + 1, close - i - 1) |> ignore
            inWord <- true
            i <- close + 1
        | '\\' ->
            current.Append line[i + 1] |> ignore
            inWord <- true
            i <- i + 2
        | ch ->
            current.Append ch |> ignore
            inWord <- true
            i <- i + 1

    if inWord then
        words.Add(current.ToString())

    List.ofSeq words

[<Fact>]
let ``POSIX quoting round-trips any arguments through a shell's splitting`` () =
    let word =
        Gen.elements ([ 'a'; 'Z'; '0'; ' '; '\''; '"'; '$'; '\\'; '*'; ';'; '-'; '/'; 'é'; '\t' ])
        |> Gen.listOf
        |> Gen.map (List.toArray >> String)

    let args = Gen.nonEmptyListOf word |> Arb.fromGen

    Check.One(
        Config.QuickThrowOnFailure.WithMaxTest 300,
        Prop.forAll args (fun words ->
            let line = Command.render Platform.unix { Program = "java"; Arguments = words }
            shSplit line = "java" :: words)
    )

[<Fact>]
let ``The repository comes from --maven-repo, then KCL_MAVEN_REPO, then Maven Central; bad values are usage errors``
    ()
    =
    let env vars name = Map.tryFind name (Map.ofList vars)

    let repo flag vars =
        Bootstrap.repository
            (env vars)
            { Bootstrap.empty with
                MavenRepository = flag
            }

    let url = Result.map string >> Result.mapError _.ExitCode

    Assert.Equal(
        Ok "https://a.example/m2/",
        url (repo (Some "https://a.example/m2/") [ "KCL_MAVEN_REPO", "https://b.example/" ])
    )

    Assert.Equal(Ok "https://b.example/", url (repo None [ "KCL_MAVEN_REPO", "https://b.example/" ]))
    Assert.Equal(Ok Fetch.MavenCentral, url (repo None []))
    Assert.Equal(Ok "file:///srv/mirror/", url (repo (Some "file:///srv/mirror/") []))
    Assert.Equal(Error ExitCode.Usage, url (repo (Some "ftp://nope/") []))
    Assert.Equal(Error ExitCode.Usage, url (repo (Some "no such folder") []))

[<Fact>]
let ``--manifest and --kcl-version exclude each other, and an unknown release is a usage error`` () =
    let code options =
        Bootstrap.manifest options
        |> Result.map _.KclVersion
        |> Result.mapError _.ExitCode

    Assert.Equal(Ok "3.1.3", code Bootstrap.empty)

    Assert.Equal(
        Ok "2.7.2",
        code
            { Bootstrap.empty with
                KclVersion = Some "2.7.2"
            }
    )

    Assert.Equal(
        Error ExitCode.Usage,
        code
            { Bootstrap.empty with
                KclVersion = Some "1.0.0"
            }
    )

    Assert.Equal(
        Error ExitCode.Usage,
        code
            { Bootstrap.empty with
                KclVersion = Some "3.1.3"
                ManifestFile = Some "m.txt"
            }
    )

    Assert.Equal(
        Error ExitCode.Usage,
        code
            { Bootstrap.empty with
                ManifestFile = Some "/no/such/manifest.txt"
            }
    )
