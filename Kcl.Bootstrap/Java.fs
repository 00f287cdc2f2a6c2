(*
    Java --- finding java, reading its version, and the minimum the jars themselves require.

    The minimum is never guessed from documentation: it is the highest class-file major version among the fetched
    jars' classes. Multi-release entries (everything under META-INF/versions/) are skipped, since an older JVM never loads them
    (jackson-core 2.16+ carries Java 21 classes there), and so is module-info.class, which only module-aware JVMs read.
*)
namespace Kcl.Bootstrap

open System
open System.Diagnostics
open System.IO
open System.IO.Compression
open System.Text.RegularExpressions
open System.Threading.Tasks

/// A Java runtime's version, as `java -version` reports it.
type JavaVersion =
    {
        /// The feature release: 8 for "1.8.0_392", 17 for "17.0.15", 21 for "21".
        Feature: int
        /// The version string as printed, e.g. "17.0.15".
        Text: string
    }

/// The class that raised the minimum Java version.
type ClassRequirement =
    {
        /// The class file's major version, e.g. 61.
        Major: int
        /// The Java feature release it needs: major - 44.
        Feature: int
        /// The jar holding the class.
        Jar: string
        /// The entry inside the jar.
        Entry: string
    }

/// Java versions and the class-file scan.
[<RequireQualifiedAccess>]
module Java =
    /// The Java feature release a class-file major version needs (52 → 8, 61 → 17, 65 → 21).
    let featureOfMajor (major: int) = major - 44

    /// Parses the banner `java -version` prints on stderr ("openjdk version \"17.0.15\" 2025-04-15", or
    /// "java version \"1.8.0_392\"").
    let parseVersion (banner: string) : Result<JavaVersion, string> =
        let m = Regex.Match(banner, "version \"([^\"]+)\"")

        let text =
            if m.Success then
                Some m.Groups[1].Value
            else
                // Some builds print `openjdk 21.0.1 2023-10-17` (the --version form).
                let m = Regex.Match(banner, "^\\S+ (\\d[^\\s]*)", RegexOptions.Multiline)
                if m.Success then Some m.Groups[1].Value else None

        match text with
        | None -> Error(sprintf "cannot read a Java version from `java -version`: %s" (banner.Trim()))
        | Some text ->
            let numbers = Regex.Match(text, "^(\\d+)(?:\\.(\\d+))?")

            if not numbers.Success then
                Error(sprintf "cannot read a Java version from \"%s\"" text)
            else
                let first = int numbers.Groups[1].Value

                let feature =
                    if first = 1 && numbers.Groups[2].Success then
                        int numbers.Groups[2].Value
                    else
                        first

                Ok { Feature = feature; Text = text }

    /// Whether a jar entry counts towards the minimum: a .class outside META-INF/versions/ that is not module-info.
    let countsTowardsMinimum (entry: string) =
        entry.EndsWith(".class", StringComparison.Ordinal)
        && not (entry.StartsWith("META-INF/versions/", StringComparison.Ordinal))
        && not (
            entry = "module-info.class"
            || entry.EndsWith("/module-info.class", StringComparison.Ordinal)
        )

    let private highestInJar (jar: string) =
        use archive = ZipFile.OpenRead jar
        let header = Array.zeroCreate<byte> 8
        let mutable best: ClassRequirement option = None

        for entry in archive.Entries do
            if countsTowardsMinimum entry.FullName && entry.Length >= 8L then
                use stream = entry.Open()
                stream.ReadExactly(header, 0, 8)

                // 0xCAFEBABE, then u2 minor, then u2 major, big-endian.
                if
                    header[0] = 0xCAuy
                    && header[1] = 0xFEuy
                    && header[2] = 0xBAuy
                    && header[3] = 0xBEuy
                then
                    let major = (int header[6] <<< 8) ||| int header[7]

                    if best |> Option.forall (fun b -> major > b.Major) then
                        best <-
                            Some
                                {
                                    Major = major
                                    Feature = featureOfMajor major
                                    Jar = jar
                                    Entry = entry.FullName
                                }

        best

    /// The class with the highest class-file major version among the jars (scanned in parallel), if any has classes.
    let requirement (jars: string list) : ClassRequirement option =
        let found = Array.zeroCreate<ClassRequirement option> jars.Length

        Parallel.For(0, jars.Length, fun i -> found[i] <- highestInJar jars[i])
        |> ignore

        found |> Array.choose id |> Array.sortByDescending _.Major |> Array.tryHead

    /// Finds java: the explicit path, then $JAVA_HOME/bin/java, then the PATH. Pure: lookups are passed in.
    let locate
        (platform: Platform)
        (explicitPath: string option)
        (getEnv: string -> string option)
        (fileExists: string -> bool)
        : Result<string, string> =
        match explicitPath with
        | Some path when fileExists path -> Ok path
        | Some path -> Error(sprintf "--java %s: no such file" path)
        | None ->
            let fromHome =
                getEnv "JAVA_HOME"
                |> Option.map (fun home -> Platform.combine platform [ home; "bin"; platform.JavaExecutable ])

            match fromHome with
            | Some path when fileExists path -> Ok path
            | Some path -> Error(sprintf "JAVA_HOME is set, but %s does not exist" path)
            | None ->
                let onPath =
                    getEnv "PATH"
                    |> Option.map (fun p -> p.Split(platform.PathListSeparator, StringSplitOptions.RemoveEmptyEntries))
                    |> Option.defaultValue [||]
                    |> Array.map (fun dir -> Platform.combine platform [ dir; platform.JavaExecutable ])
                    |> Array.tryFind fileExists

                match onPath with
                | Some path -> Ok path
                | None ->
                    Error(
                        sprintf
                            "no Java found: pass --java PATH, set JAVA_HOME, or put %s on the PATH"
                            platform.JavaExecutable
                    )

    /// Runs `java -version` (bounded to 30 s) and parses its banner.
    let version (java: string) : Result<JavaVersion, string> =
        try
            let info =
                ProcessStartInfo(
                    java,
                    [ "-version" ],
                    UseShellExecute = false,
                    RedirectStandardOutput = true,
                    RedirectStandardError = true
                )

            use p = Process.Start info
            let stderr = p.StandardError.ReadToEndAsync()
            let stdout = p.StandardOutput.ReadToEndAsync()

            if not (p.WaitForExit(TimeSpan.FromSeconds 30.0)) then
                p.Kill true
                Error(sprintf "%s -version did not finish within 30 s" java)
            elif p.ExitCode <> 0 then
                Error(sprintf "%s -version exited with %d: %s" java p.ExitCode (stderr.Result.Trim()))
            else
                // Java writes the banner to stderr; some wrappers print it on stdout.
                parseVersion (stderr.Result + "\n" + stdout.Result)
        with e ->
            Error(sprintf "cannot run %s -version: %s" java e.Message)

    /// Whether -Dfile.encoding=UTF-8 must be added: Java 17 and older default to the locale's charset, which in a
    /// POSIX locale turns every non-ASCII partition key into '?' (PROTOCOL.md §1.1); the user's own setting wins.
    let needsUtf8Flag (version: JavaVersion) (jvmArgs: string list) =
        version.Feature <= 17
        && not (
            jvmArgs
            |> List.exists (fun a -> a.StartsWith("-Dfile.encoding=", StringComparison.Ordinal))
        )

    /// Checks a runtime against the jars' requirement; the error names both versions and the class that needs it.
    let check (version: JavaVersion) (requirement: ClassRequirement option) : Result<unit, string> =
        match requirement with
        | Some r when r.Feature > version.Feature ->
            Error(
                sprintf
                    "Java %d or later is required, but the Java found is %s (feature %d): %s in %s is class-file version %d"
                    r.Feature
                    version.Text
                    version.Feature
                    r.Entry
                    (Path.GetFileName r.Jar)
                    r.Major
            )
        | _ -> Ok()
