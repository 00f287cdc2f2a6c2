(*
    Bootstrap --- the whole run, from options to a command: manifest, properties, fetch, Java, command. Every check
    happens before anything is launched, and each kind of failure has its own exit code.
*)
namespace Kcl.Bootstrap

open System
open System.IO
open System.Net.Http
open System.Threading
open System.Threading.Tasks

/// The bootstrap's options, as the tool's flags and environment variables set them.
type BootstrapOptions =
    {
        /// -p/--properties: the daemon's properties file (required unless only the classpath is printed).
        PropertiesFile: string option
        /// -j/--java: the java executable.
        Java: string option
        /// -c/--jar-path: the cache root (else KCL_CACHE_DIR, else the user's cache directory).
        CacheRoot: string option
        /// -l/--log-configuration: a logback configuration file for the daemon.
        LogConfiguration: string option
        /// --maven-repo: the repository base URL (else KCL_MAVEN_REPO, else Maven Central).
        MavenRepository: string option
        /// --manifest: a flat coordinate list or a flattened pom.xml, instead of a shipped release.
        ManifestFile: string option
        /// --kcl-version: a shipped release (default 3.1.3).
        KclVersion: string option
        /// --offline: never download.
        Offline: bool
        /// --jvm-arg: JVM options, in order.
        JvmArgs: string list
        /// --classpath-extra: entries after the jars, before the properties folder.
        ClasspathExtra: string list
        /// Parallel downloads (default 8).
        Parallelism: int option
    }

/// A failed run: the exit code and what went wrong.
type BootstrapFailure =
    {
        /// 2 usage, 3 fetch or verification, 4 Java preflight, 5 properties validation.
        ExitCode: int
        /// One line per problem.
        Messages: string list
    }

/// A run that passed every check.
type BootstrapPlan =
    {
        /// The daemon's classpath.
        Classpath: string
        /// The daemon's command; None when only the classpath was asked for (no properties file, no Java check).
        Command: Command option
        /// The fetch's result.
        Fetched: FetchResult
    }

/// The bootstrap's exit codes.
[<RequireQualifiedAccess>]
module ExitCode =
    /// Printed, or success.
    [<Literal>]
    let Ok = 0

    /// A usage error: bad flags, unreadable manifest, missing files named on the command line.
    [<Literal>]
    let Usage = 2

    /// A jar could not be fetched or verified.
    [<Literal>]
    let Fetch = 3

    /// No usable Java.
    [<Literal>]
    let Java = 4

    /// The properties file is invalid.
    [<Literal>]
    let Properties = 5

/// Running the checks and building the command.
[<RequireQualifiedAccess>]
module Bootstrap =
    /// Options with nothing set.
    let empty =
        {
            PropertiesFile = None
            Java = None
            CacheRoot = None
            LogConfiguration = None
            MavenRepository = None
            ManifestFile = None
            KclVersion = None
            Offline = false
            JvmArgs = []
            ClasspathExtra = []
            Parallelism = None
        }

    let private fail code messages =
        Error { ExitCode = code; Messages = messages }

    /// The manifest the options name: --manifest FILE, else --kcl-version, else the default release.
    let manifest (options: BootstrapOptions) : Result<Manifest, BootstrapFailure> =
        match options.ManifestFile, options.KclVersion with
        | Some _, Some _ -> fail ExitCode.Usage [ "--manifest and --kcl-version exclude each other" ]
        | Some file, None when not (File.Exists file) ->
            fail ExitCode.Usage [ sprintf "--manifest %s: no such file" file ]
        | Some file, None ->
            Manifest.parse (File.ReadAllText file)
            |> Result.mapError (fun e ->
                {
                    ExitCode = ExitCode.Usage
                    Messages = [ sprintf "--manifest %s: %s" file e ]
                })
        | None, version ->
            Manifest.release (defaultArg version Manifest.DefaultKclVersion)
            |> Result.mapError (fun e ->
                {
                    ExitCode = ExitCode.Usage
                    Messages = [ e ]
                })

    /// The repository URL: an http(s) or file URL, or a local folder's path.
    let repository (getEnv: string -> string option) (options: BootstrapOptions) : Result<Uri, BootstrapFailure> =
        let text =
            options.MavenRepository
            |> Option.orElse (getEnv "KCL_MAVEN_REPO" |> Option.filter (String.IsNullOrWhiteSpace >> not))
            |> Option.defaultValue Fetch.MavenCentral

        match Uri.TryCreate(text, UriKind.Absolute) with
        | true, uri when uri.Scheme = "http" || uri.Scheme = "https" || uri.IsFile -> Ok uri
        | _ when Directory.Exists text -> Ok(Uri(Path.GetFullPath text))
        | _ ->
            fail
                ExitCode.Usage
                [
                    sprintf "maven repository '%s' is neither an http(s):// or file:// URL nor a folder" text
                ]

    /// Everything up to the command: manifest, properties, fetch, then (for a launch) Java. Warnings go to warn,
    /// fetch progress to report. With printClasspathOnly the properties file is optional and Java is not checked.
    let prepare
        (client: HttpClient)
        (getEnv: string -> string option)
        (warn: string -> unit)
        (report: FetchEvent -> unit)
        (printClasspathOnly: bool)
        (options: BootstrapOptions)
        (ct: CancellationToken)
        : Task<Result<BootstrapPlan, BootstrapFailure>> =
        task {
            let checks =
                result {
                    let! manifest = manifest options
                    let! repository = repository getEnv options

                    let! properties =
                        match options.PropertiesFile with
                        | None when printClasspathOnly -> Ok None
                        | None -> fail ExitCode.Usage [ "-p/--properties FILE is required" ]
                        | Some file when not (File.Exists file) ->
                            fail ExitCode.Properties [ sprintf "properties file %s does not exist" file ]
                        | Some file ->
                            let findings = Properties.check file

                            for f in findings do
                                if f.Severity = Severity.Warning then
                                    warn (sprintf "%s: %s" file f.Message)

                            match findings |> List.filter (fun f -> f.Severity = Severity.Error) with
                            | [] -> Ok(Some(Path.GetFullPath file))
                            | errors ->
                                fail ExitCode.Properties (errors |> List.map (fun f -> sprintf "%s: %s" file f.Message))

                    do!
                        match options.LogConfiguration with
                        | Some file when not (File.Exists file) ->
                            fail ExitCode.Usage [ sprintf "--log-configuration %s: no such file" file ]
                        | _ -> Ok()

                    let cacheRoot =
                        options.CacheRoot
                        |> Option.orElse (getEnv "KCL_CACHE_DIR" |> Option.filter (String.IsNullOrWhiteSpace >> not))
                        |> Option.defaultWith Fetch.defaultCacheRoot
                        |> Path.GetFullPath

                    return manifest, repository, properties, cacheRoot
                }

            match checks with
            | Error e -> return Error e
            | Ok(manifest, repository, properties, cacheRoot) ->
                Directory.CreateDirectory cacheRoot |> ignore

                let settings =
                    { Fetch.defaults cacheRoot with
                        Repository = repository
                        Offline = options.Offline
                        Parallelism = defaultArg options.Parallelism 8
                    }

                match! Fetch.run client settings report manifest ct with
                | Error errors -> return fail ExitCode.Fetch (errors |> List.map _.Message)
                | Ok fetched ->
                    let extras = options.ClasspathExtra |> List.map Path.GetFullPath
                    let classpath = Classpath.build Platform.current fetched.Jars extras properties

                    match properties with
                    | None ->
                        return
                            Ok
                                {
                                    Classpath = classpath
                                    Command = None
                                    Fetched = fetched
                                }
                    | Some _ when printClasspathOnly ->
                        return
                            Ok
                                {
                                    Classpath = classpath
                                    Command = None
                                    Fetched = fetched
                                }
                    | Some propertiesFile ->
                        let java =
                            result {
                                let! java = Java.locate Platform.current options.Java getEnv File.Exists
                                let! version = Java.version java
                                do! Java.check version (Java.requirement fetched.Jars)
                                return java, version
                            }

                        match java with
                        | Error e -> return fail ExitCode.Java [ e ]
                        | Ok(java, version) ->
                            let jvmArgs =
                                options.JvmArgs
                                @ (if Java.needsUtf8Flag version options.JvmArgs then
                                       [ "-Dfile.encoding=UTF-8" ]
                                   else
                                       [])

                            let command =
                                Command.build
                                    {
                                        Java = java
                                        JvmArgs = jvmArgs
                                        Classpath = classpath
                                        MainClass = Manifest.mainClass manifest.KclVersion
                                        PropertiesFile = propertiesFile
                                        LogConfiguration = options.LogConfiguration |> Option.map Path.GetFullPath
                                        PropertiesAsOption = Manifest.takesPropertiesOption manifest.KclVersion
                                    }

                            return
                                Ok
                                    {
                                        Classpath = classpath
                                        Command = Some command
                                        Fetched = fetched
                                    }
        }
