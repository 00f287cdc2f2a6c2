/// The command line: Argu's description of the flags, and their mapping to BootstrapOptions.
module Kcl.Bootstrap.Tool.Cli

open Argu
open Kcl.Bootstrap

/// kcl-bootstrap's flags. The Node binding's flags (-p, -j, -c, -e, -l) keep their meaning.
type Arguments =
    | [<AltCommandLine("-p"); Unique>] Properties of file: string
    | [<AltCommandLine("-j"); Unique>] Java of path: string
    | [<AltCommandLine("-c"); Unique>] Jar_Path of dir: string
    | [<AltCommandLine("-e")>] Execute
    | [<AltCommandLine("-l"); Unique>] Log_Configuration of file: string
    | [<Unique>] Maven_Repo of url: string
    | [<Unique>] Manifest of file: string
    | [<Unique>] Kcl_Version of version: string
    | Offline
    | [<EqualsAssignmentOrSpaced>] Jvm_Arg of arg: string
    | Classpath_Extra of path: string
    | Print_Classpath
    | [<Unique>] Parallel of downloads: int

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Properties _ -> "the daemon's properties file (required unless --print-classpath)."
            | Java _ -> "the java executable (default: $JAVA_HOME/bin/java, then java on the PATH)."
            | Jar_Path _ ->
                "the jar cache folder, created if missing; jars go under <dir>/<kcl-version>/ (env KCL_CACHE_DIR; default: the user's cache directory)."
            | Execute ->
                "run the daemon (on Unix the bootstrap becomes java, so signals and the exit code pass through) instead of printing the command."
            | Log_Configuration _ -> "a logback configuration file for the daemon."
            | Maven_Repo _ ->
                "a Maven-layout repository: http(s):// or file:// URL, or a folder (env KCL_MAVEN_REPO; default Maven Central)."
            | Manifest _ ->
                "a flat list of group:artifact:version (optionally followed by sha1:<hex> or sha256:<hex>), or a flattened pom.xml. No transitive resolution is done: list every jar."
            | Kcl_Version _ ->
                sprintf
                    "a shipped KCL release: %s (default %s)."
                    (String.concat ", " Kcl.Bootstrap.Manifest.releases)
                    Kcl.Bootstrap.Manifest.DefaultKclVersion
            | Offline -> "never download; fail if a jar is missing or does not verify."
            | Jvm_Arg _ -> "a JVM option, repeatable (write --jvm-arg=-Xmx1g for options starting with '-')."
            | Classpath_Extra _ -> "an extra classpath entry after the jars, repeatable."
            | Print_Classpath -> "fetch and print the classpath only (no properties file or Java needed)."
            | Parallel _ -> "parallel downloads (default 8)."

/// The parser, named for --help.
let parser = ArgumentParser.Create<Arguments>(programName = "kcl-bootstrap")

/// The options the parsed flags set.
let toOptions (results: ParseResults<Arguments>) : BootstrapOptions =
    {
        PropertiesFile = results.TryGetResult Properties
        Java = results.TryGetResult Java
        CacheRoot = results.TryGetResult Jar_Path
        LogConfiguration = results.TryGetResult Log_Configuration
        MavenRepository = results.TryGetResult Maven_Repo
        ManifestFile = results.TryGetResult Manifest
        KclVersion = results.TryGetResult Kcl_Version
        Offline = results.Contains Offline
        JvmArgs = results.GetResults Jvm_Arg
        ClasspathExtra = results.GetResults Classpath_Extra
        Parallelism = results.TryGetResult Parallel
    }
