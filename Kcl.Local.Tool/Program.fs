/// kcl-local: the command line over Kcl.Local. Only the summary goes to stdout; everything else to stderr.
module Kcl.Local.Tool.Program

open System
open System.IO
open System.Runtime.InteropServices
open System.Threading
open System.Threading.Tasks
open Argu
open Kcl.Core
open Kcl.Local
open Kcl.Local.Tool.Arguments

/// Every shard finished cleanly.
let exitClean = 0
/// A shard saw a violation or could not finish.
let exitViolation = 1
/// The command line, input or lease file is wrong.
let exitUsage = 2
/// The properties file is invalid.
let exitInvalidProperties = 5

let private usage (message: string) =
    eprintfn "kcl-local: %s" message
    exitUsage

let private run (args: ParseResults<Argument>) =
    match args.TryGetResult Properties with
    | None -> usage "--properties FILE is required (see --help)"
    | Some propertiesFile ->
        match DaemonConfig.load propertiesFile with
        | Error problems ->
            for problem in problems do
                eprintfn "kcl-local: invalid properties: %s" problem

            exitInvalidProperties
        | Ok config ->
            let faults = args.GetResults Inject_Checkpoint_Error |> List.map FaultSpec.parse

            match
                faults
                |> List.tryPick (function
                    | Error e -> Some e
                    | Ok _ -> None)
            with
            | Some problem -> usage ("--inject-checkpoint-error " + problem)
            | None ->
                let faults =
                    faults
                    |> List.choose (function
                        | Ok f -> Some f
                        | Error _ -> None)

                let config =
                    match args.TryGetResult Stream with
                    | Some name -> { config with StreamName = name }
                    | None -> config

                let endpoint =
                    args.TryGetResult Kinesis_Endpoint |> Option.orElse config.KinesisEndpoint

                let source =
                    match args.TryGetResult Generate, args.TryGetResult Input with
                    | Some _, Some _ -> Error "give --generate or --input, not both"
                    | None, None when endpoint.IsSome ->
                        match Uri.TryCreate(endpoint.Value, UriKind.Absolute) with
                        | true, uri when uri.Scheme = "http" || uri.Scheme = "https" ->
                            Ok(Source.Kinesis(uri, config.RegionName |> Option.defaultValue "us-east-1", config.StreamName))
                        | _ -> Error(sprintf "the Kinesis endpoint %s is not an http(s) URL" endpoint.Value)
                    | None, None -> Error "give --generate N, --input FILE|- or --kinesis-endpoint URL"
                    | Some n, None when n < 0 -> Error "--generate needs a count from 0"
                    | Some n, None ->
                        Ok(
                            Source.Generated
                                {
                                    Records = n
                                    PayloadBytes = args.GetResult(Payload, 100)
                                    Seed = args.GetResult(Seed, 42)
                                    KeyPattern = args.GetResult(Key_Pattern, "pk-{i}")
                                }
                        )
                    | None, Some "-" -> Ok(Source.Lines(new StreamReader(Console.OpenStandardInput())))
                    | None, Some file -> Ok(Source.File file)

                let shards = args.GetResult(Shards, (if args.Contains Generate then 4 else 1))

                match source with
                | Error problem -> usage problem
                | Ok _ when shards < 1 -> usage "--shards needs at least 1"
                | Ok source ->
                    for key in config.IgnoredKeys do
                        eprintfn "kcl-local: ignoring %s (the local daemon has no use for it)" key

                    let stateDir =
                        args.TryGetResult State_Dir
                        |> Option.defaultWith (fun () -> LocalDaemon.defaultStateDir config.ApplicationName)

                    let live =
                        not (args.Contains No_Progress)
                        && not Console.IsErrorRedirected
                        && not (args.Contains Quiet && args.Contains Json)

                    let childLog =
                        if live then
                            Directory.CreateDirectory stateDir |> ignore
                            let path = Path.Combine(stateDir, "children.log")
                            eprintfn "kcl-local: the processors' stderr goes to %s" path
                            Some(TextWriter.Synchronized(new StreamWriter(path, false, AutoFlush = true)))
                        else
                            None

                    // Read once: Argu's Contains reads a quotation on every call, and this runs for every line a
                    // child logs.
                    let quiet = args.Contains Quiet

                    let childStderr shardId (line: string) =
                        match childLog with
                        | Some log -> log.WriteLine("[" + shardId + "] " + line)
                        | None ->
                            if not quiet then
                                Console.Error.WriteLine("[" + shardId + "] " + line)

                    let settings =
                        { RunSettings.Create(config, stateDir, source, shards) with
                            Fresh = args.Contains Fresh
                            Charset =
                                if args.Contains Jdk17_Charset then
                                    Json.DaemonCharset.PosixAscii
                                else
                                    Json.DaemonCharset.Utf8
                            Faults = faults
                            SlowBatch = TimeSpan.FromMilliseconds(float (args.GetResult(Slow_Batches, 0)))
                            DuplicateEvery = args.TryGetResult Duplicate_Batches |> Option.filter (fun n -> n > 0)
                            LeaseLostAfter = args.TryGetResult Lease_Lost_After
                            DefaultWaitLimit = TimeSpan.FromSeconds(float (args.GetResult(Wait_Limit, 300)))
                            DedicatedCpus = not (args.Contains Shared_Cpus)
                            ChildStderr = childStderr
                            Log = fun line -> eprintfn "kcl-local: %s" line
                        }

                    use stop = new CancellationTokenSource()
                    use kill = new CancellationTokenSource()

                    // The first Ctrl-C or SIGTERM shuts down gracefully (shutdownRequested, then leaseLost); a second
                    // one kills the children.
                    let onSignal (context: PosixSignalContext) =
                        context.Cancel <- true

                        if stop.IsCancellationRequested then
                            eprintfn "kcl-local: killing the processors"
                            kill.Cancel()
                        else
                            eprintfn "kcl-local: shutting down (again to kill)"
                            stop.Cancel()

                    use _sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, onSignal)
                    use _sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, onSignal)

                    eprintfn
                        "kcl-local: %s over %s of %s; leases in %s"
                        (String.Join(" ", config.Command))
                        (match source with
                         | Source.Kinesis(endpoint, _, _) -> sprintf "the shards at %O" endpoint
                         | _ -> sprintf "%d shards" shards)
                        config.StreamName
                        (LeaseFile.path stateDir config.ApplicationName)

                    let mutable meters: ShardProgress[] = [||]
                    let running = LocalDaemon.run settings (fun m -> meters <- m) stop.Token kill.Token

                    match args.TryGetResult Stop_After with
                    | Some target ->
                        Task.Run(fun () ->
                            task {
                                while not running.IsCompleted
                                      && (meters.Length = 0 || (meters |> Array.sumBy _.Delivered) < target) do
                                    do! Task.Delay 50

                                if not running.IsCompleted then
                                    eprintfn "kcl-local: %d records delivered; shutting down" target
                                    stop.Cancel()
                            }
                            :> Task)
                        |> ignore
                    | None -> ()

                    if live then
                        LiveProgress.show meters running

                    let outcome = running.GetAwaiter().GetResult()
                    childLog |> Option.iter _.Dispose()

                    match outcome with
                    | Error problem -> usage problem
                    | Ok summary ->
                        for finding in summary.Violations @ summary.Warnings do
                            eprintfn "kcl-local: %O" finding

                            match finding.Line with
                            | Some line -> eprintfn "    the line: %s" line
                            | None -> ()

                        for shardId, reason in summary.Failures do
                            eprintfn "kcl-local: %s failed: %s" shardId reason

                        Console.Out.WriteLine(
                            if args.Contains Json then
                                Summary.toJson summary
                            else
                                Summary.toLine summary
                        )

                        Console.Out.Flush()
                        if summary.Clean then exitClean else exitViolation

[<EntryPoint>]
let main argv =
    let parser = ArgumentParser.Create<Argument>(programName = "kcl-local")

    try
        let args = parser.ParseCommandLine(argv, raiseOnUsage = true)
        run args
    with :? ArguParseException as e ->
        if e.ErrorCode = ErrorCode.HelpText then
            printfn "%s" e.Message
            exitClean
        else
            eprintfn "%s" e.Message
            exitUsage
