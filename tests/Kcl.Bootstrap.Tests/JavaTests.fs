/// Java version banners, locating java, and the minimum read from class files.
module Kcl.Bootstrap.Tests.JavaTests

open System.IO
open Kcl.Bootstrap
open Kcl.Bootstrap.Tests.Helpers
open Xunit

[<Fact>]
let ``java -version banners of every era parse to their feature release`` () =
    for banner, feature, text in
        [
            "openjdk version \"17.0.15\" 2025-04-15\nOpenJDK Runtime Environment (build 17.0.15+6-Debian-1deb12u1)",
            17,
            "17.0.15"
            "java version \"1.8.0_392\"\nJava(TM) SE Runtime Environment", 8, "1.8.0_392"
            "openjdk version \"21\" 2023-09-19", 21, "21"
            "openjdk version \"22-ea\" 2024-03-19", 22, "22-ea"
            "Picked up JAVA_TOOL_OPTIONS: -Xmx1g\nopenjdk version \"11.0.2\" 2019-01-15", 11, "11.0.2"
            "openjdk 21.0.1 2023-10-17", 21, "21.0.1"
        ] do
        Assert.Equal(Ok { Feature = feature; Text = text }, Java.parseVersion banner)

    Assert.True(Result.isError (Java.parseVersion "Error: could not find libjava.so"))

[<Fact>]
let ``Java is found from --java, then JAVA_HOME, then the PATH`` () =
    let files = set [ "/opt/jdk/bin/java"; "/usr/bin/java"; "/explicit/java" ]
    let env vars name = Map.tryFind name (Map.ofList vars)

    let locate explicitPath vars =
        Java.locate Platform.unix explicitPath (env vars) files.Contains

    Assert.Equal(Ok "/explicit/java", locate (Some "/explicit/java") [ "JAVA_HOME", "/opt/jdk" ])
    Assert.Equal(Ok "/opt/jdk/bin/java", locate None [ "JAVA_HOME", "/opt/jdk"; "PATH", "/usr/bin" ])
    Assert.Equal(Ok "/usr/bin/java", locate None [ "PATH", "/nowhere:/usr/bin" ])
    Assert.True(Result.isError (locate None [ "JAVA_HOME", "/missing" ]))
    Assert.True(Result.isError (locate None [ "PATH", "/nowhere" ]))
    Assert.True(Result.isError (locate (Some "/missing/java") []))

    let winFiles = set [ @"C:\jdk\bin\java.exe" ]

    Assert.Equal(
        Ok @"C:\jdk\bin\java.exe",
        Java.locate Platform.windows None (env [ "PATH", @"C:\other;C:\jdk\bin" ]) winFiles.Contains
    )

[<Fact>]
let ``The minimum comes from the highest class major, skipping META-INF/versions and module-info`` () =
    use dir = new TempDir()

    let write name entries =
        let path = Path.Combine(dir.Path, name)
        File.WriteAllBytes(path, makeJar entries)
        path

    let a =
        write
            "a.jar"
            [
                "p/A.class", classBytes 52 ""
                "META-INF/versions/21/p/A.class", classBytes 65 ""
                "module-info.class", classBytes 66 ""
            ]

    let b =
        write
            "b.jar"
            [
                "q/B.class", classBytes 55 ""
                "q/module-info.class", classBytes 66 ""
                "q/readme.txt", [| 1uy |]
            ]

    let none = write "c.jar" [ "META-INF/MANIFEST.MF", [| 1uy |] ]

    match Java.requirement [ a; b; none ] with
    | Some r ->
        Assert.Equal(55, r.Major)
        Assert.Equal(11, r.Feature)
        Assert.Equal(b, r.Jar)
        Assert.Equal("q/B.class", r.Entry)
    | None -> failwith "expected a requirement"

    Assert.Equal(None, Java.requirement [ none ])

[<Fact>]
let ``The preflight refuses an older Java naming both versions, and UTF-8 is added only up to Java 17`` () =
    let need =
        Some
            {
                Major = 61
                Feature = 17
                Jar = "/c/x.jar"
                Entry = "p/X.class"
            }

    let java11 = { Feature = 11; Text = "11.0.2" }

    match Java.check java11 need with
    | Error e ->
        Assert.Contains("Java 17 or later is required", e)
        Assert.Contains("11.0.2", e)
        Assert.Contains("p/X.class in x.jar", e)
    | Ok() -> failwith "expected a refusal"

    Assert.Equal(Ok(), Java.check { Feature = 17; Text = "17" } need)
    Assert.True(Java.needsUtf8Flag { Feature = 17; Text = "17" } [ "-Xmx1g" ])
    Assert.False(Java.needsUtf8Flag { Feature = 17; Text = "17" } [ "-Dfile.encoding=ISO-8859-1" ])
    Assert.False(Java.needsUtf8Flag { Feature = 18; Text = "18" } [])

[<Fact>]
let ``A fake java's banner is read by running it`` () =
    use dir = new TempDir()
    let fake = Path.Combine(dir.Path, "java")
    File.WriteAllText(fake, "#!/bin/sh\necho 'java version \"1.8.0_392\"' >&2\n")
    File.SetUnixFileMode(fake, UnixFileMode.UserRead ||| UnixFileMode.UserExecute)
    Assert.Equal(Ok { Feature = 8; Text = "1.8.0_392" }, Java.version fake)
    File.WriteAllText(fake, "#!/bin/sh\necho broken >&2\nexit 3\n")
    Assert.True(Result.isError (Java.version fake))
