(*
    A local daemon run: the stream (shards fed by a source), the lease file, and one driven child per shard, all
    running concurrently until every shard has ended, lost its lease, or the run is stopped or killed.
*)
namespace Kcl.Local

open System
open System.Diagnostics
open System.IO
open System.Threading
open System.Threading.Tasks
open Kcl.Core

/// Where the records come from.
[<RequireQualifiedAccess>]
type Source =
    /// The deterministic generator.
    | Generated of settings: GeneratorSettings
    /// An NDJSON file, read whole before the run: a bad line is an error before any child starts.
    | File of path: string
    /// NDJSON lines as they arrive (stdin); the stream ends with the reader. A bad line is reported and skipped.
    | Lines of reader: TextReader
    /// A stream at a Kinesis endpoint, read as a polling KCL worker reads it (the shards' ids and sequence numbers
    /// are the stream's own; the run's shard count is ignored).
    | Kinesis of endpoint: Uri * region: string * streamName: string

/// Everything a run needs besides the properties.
type RunSettings =
    {
        /// The daemon's settings from the properties file.
        Config: DaemonConfig
        /// Where the child starts and its relative program path is resolved: the daemon's working directory.
        WorkingDirectory: string
        /// Where the lease file lives.
        StateDir: string
        /// Discard the stored checkpoints first.
        Fresh: bool
        /// The records.
        Source: Source
        /// How many shards the stream has.
        Shards: int
        /// How the daemon side encodes its lines.
        Charset: Json.DaemonCharset
        /// Injected checkpoint failures, counted per shard.
        Faults: FaultRule list
        /// A pause before each batch.
        SlowBatch: TimeSpan
        /// Every Nth batch delivered twice, if set.
        DuplicateEvery: int option
        /// The lease lost after this many batches on each shard, if set.
        LeaseLostAfter: int option
        /// The bound on each wait for a child's line when `timeoutInSeconds` is unset.
        DefaultWaitLimit: TimeSpan
        /// How long a child may take to exit after its stdin is closed.
        ExitLimit: TimeSpan
        /// What each shard's session keeps of its history: `Latest` unless a test reads the whole transcript, since a
        /// whole history holds every batch's records and every line of the child's until the run ends.
        History: SessionHistory
        /// On Linux, a CPU of its own for each shard's thread while at most half the CPUs are so taken, the children on
        /// the others (`DriverSettings.DedicatedCpus`).
        DedicatedCpus: bool
        /// Receives each line a child writes to stderr, with the shard id.
        ChildStderr: string -> string -> unit
        /// Receives the run's own log lines (meant for stderr).
        Log: string -> unit
    }

    /// A run of a generated stream with the default bounds (5 minutes per wait, 10 seconds to exit), only the latest
    /// history in each shard's session, a CPU of its own for each shard's thread where one can be had, child
    /// stderr and logs dropped.
    static member Create(config: DaemonConfig, stateDir: string, source: Source, shards: int) =
        {
            Config = config
            WorkingDirectory = Environment.CurrentDirectory
            StateDir = stateDir
            Fresh = false
            Source = source
            Shards = shards
            Charset = Json.DaemonCharset.Utf8
            Faults = []
            SlowBatch = TimeSpan.Zero
            DuplicateEvery = None
            LeaseLostAfter = None
            DefaultWaitLimit = TimeSpan.FromMinutes 5.0
            ExitLimit = TimeSpan.FromSeconds 10.0
            History = SessionHistory.Latest
            DedicatedCpus = true
            ChildStderr = fun _ _ -> ()
            Log = ignore
        }

/// Running the local daemon.
[<RequireQualifiedAccess>]
module LocalDaemon =
    /// The default state directory of an application: under the user's local application data.
    let defaultStateDir (applicationName: string) =
        let baseDir =
            match Environment.GetEnvironmentVariable "XDG_STATE_HOME" with
            | null
            | "" ->
                Environment.GetFolderPath(
                    Environment.SpecialFolder.LocalApplicationData,
                    Environment.SpecialFolderOption.Create
                )
            | dir -> dir

        Path.Combine(baseDir, "kcl-local", applicationName)

    // A loaded source lives for the whole run, but its last records are still young when loading ends, and the
    // stream's first collection copied them into the old generation while every child waited: tens of milliseconds
    // for 1,000,000 records of 100 B (bench/README.md, "Local daemon", "Sixteenth round"). Two young collections here,
    // before any child starts, take 17-35 ms: the first moves generation 0's survivors into generation 1, the second
    // on into 2.
    let private settleLoaded () =
        GC.Collect(1, GCCollectionMode.Forced, true)
        GC.Collect(1, GCCollectionMode.Forced, true)

    let private fill (settings: RunSettings) (feeds: ShardFeed[]) : Result<Task, string> =
        let add (record: SourceRecord) =
            feeds[Shards.shardOf feeds.Length record.PartitionKey].Add(record, DateTimeOffset.UtcNow)

        let completeAll () = feeds |> Array.iter _.Complete()

        match settings.Source with
        | Source.Generated generator ->
            RecordSource.generate generator |> Seq.iter add
            completeAll ()
            settleLoaded ()
            Ok Task.CompletedTask
        | Source.File path ->
            if not (IO.File.Exists path) then
                Error(sprintf "the input file %s does not exist" path)
            else
                let parsed =
                    IO.File.ReadLines path
                    |> Seq.indexed
                    |> Seq.filter (fun (_, line) -> not (String.IsNullOrWhiteSpace line))
                    |> Seq.map (fun (i, line) -> i + 1, RecordSource.parseLine line)
                    |> List.ofSeq

                match
                    parsed
                    |> List.tryPick (function
                        | i, Error e -> Some(i, e)
                        | _ -> None)
                with
                | Some(line, problem) -> Error(sprintf "%s, line %d: %s" path line problem)
                | None ->
                    parsed
                    |> List.iter (function
                        | _, Ok r -> add r
                        | _ -> ())

                    completeAll ()
                    settleLoaded ()
                    Ok Task.CompletedTask
        | Source.Lines reader ->
            Ok(
                Task.Run(fun () ->
                    let mutable number = 0
                    let mutable line = reader.ReadLine()

                    while not (isNull line) do
                        number <- number + 1

                        if not (String.IsNullOrWhiteSpace line) then
                            match RecordSource.parseLine line with
                            | Ok record -> add record
                            | Error problem -> settings.Log(sprintf "input line %d skipped: %s" number problem)

                        line <- reader.ReadLine()

                    completeAll ())
            )
        // Read by the pollers the run starts once it knows the checkpoints.
        | Source.Kinesis _ -> Ok Task.CompletedTask

    /// Runs the local daemon until every shard is done. `stop` starts the graceful shutdown (as SIGTERM does);
    /// `kill` ends every child at once and returns, as a daemon that dies would (the lease file keeps what was
    /// checkpointed). `Error` for a problem found before any child starts (a bad input file or lease file).
    let run
        (settings: RunSettings)
        (progress: ShardProgress[] -> unit)
        (stop: CancellationToken)
        (kill: CancellationToken)
        : Task<Result<Summary, string>> =
        task {
            Rehearsal.start settings.Charset
            let config = settings.Config
            let leaseFile = LeaseFile.path settings.StateDir config.ApplicationName

            if settings.Fresh && IO.File.Exists leaseFile then
                IO.File.Delete leaseFile

            match LeaseFile.load leaseFile with
            | Error problem -> return Error(sprintf "%s: %s" leaseFile problem)
            | Ok stored ->
                let! listed =
                    match settings.Source with
                    | Source.Kinesis(endpoint, region, stream) ->
                        task {
                            let client = KinesisSource.client endpoint region
                            let! shards = KinesisSource.listShards client stream
                            return shards |> Result.map (fun shards -> Some(client, stream, shards))
                        }
                    | _ -> Task.FromResult(Ok None)

                let feeds =
                    match listed with
                    | Ok(Some(_, _, shards)) -> shards |> List.mapi (fun i s -> ShardFeed(i, s.ShardId)) |> Array.ofList
                    | _ -> Array.init settings.Shards (fun i -> ShardFeed i)

                match listed |> Result.bind (fun _ -> fill settings feeds) with
                | Error problem -> return Error problem
                | Ok filling ->
                    let leases = LeaseTable(leaseFile, config.ApplicationName, stored)
                    let update shardId change = leases.Update(shardId, change)

                    let starts =
                        feeds
                        |> Array.map (fun feed ->
                            let present = feed.Count

                            let entry =
                                leases.TryFind feed.ShardId
                                |> Option.defaultValue
                                    {
                                        ShardId = feed.ShardId
                                        Checkpoint = config.InitialPosition.WireName
                                        SubSequenceNumber = 0L
                                        HighestDelivered = None
                                    }

                            leases.Set entry

                            let position =
                                match entry.Checkpoint with
                                | "TRIM_HORIZON" -> 0
                                // Records in the source before the run started are the stream's past.
                                | "LATEST" -> present
                                | "SHARD_END" -> -1
                                | digits -> feed.PositionAfter digits

                            let previously =
                                entry.HighestDelivered |> Option.map feed.PositionAfter |> Option.defaultValue 0

                            {
                                Feed = feed
                                Checkpoint = entry.Checkpoint, entry.SubSequenceNumber
                                Position = position
                                PreviouslyDelivered = previously
                            })

                    leases.Save()

                    let driver =
                        {
                            Command = config.Command
                            WorkingDirectory = settings.WorkingDirectory
                            MaxRecords = config.MaxRecords
                            IdleTimeBetweenReads = config.IdleTimeBetweenReads
                            CallProcessRecordsEvenForEmptyRecordList = config.CallProcessRecordsEvenForEmptyRecordList
                            WaitLimit = config.Timeout |> Option.defaultValue settings.DefaultWaitLimit
                            ExitLimit = settings.ExitLimit
                            Charset = settings.Charset
                            Faults = settings.Faults
                            SlowBatch = settings.SlowBatch
                            DuplicateEvery = settings.DuplicateEvery
                            LeaseLostAfter = settings.LeaseLostAfter
                            History = settings.History
                            DedicatedCpus = settings.DedicatedCpus
                        }

                    let hooks =
                        {
                            Checkpointed =
                                fun shardId position ->
                                    update shardId (fun e ->
                                        { e with
                                            Checkpoint = position.SequenceNumber.Value
                                            SubSequenceNumber = position.SubSequenceNumber
                                        })
                            Delivering =
                                fun shardId highest ->
                                    update shardId (fun e ->
                                        match e.HighestDelivered with
                                        | Some before when Shards.compareDigits before highest >= 0 -> e
                                        | _ ->
                                            { e with
                                                HighestDelivered = Some highest
                                            })
                            ChildStderr = settings.ChildStderr
                        }

                    let meters =
                        starts
                        |> Array.map (fun s -> ShardProgress(s.Feed.ShardId, s.Feed.Count - max 0 s.Position))

                    progress meters
                    let clock = Stopwatch.StartNew()
                    use pollersStop = CancellationTokenSource.CreateLinkedTokenSource(stop, kill)

                    let pollers =
                        match listed with
                        | Ok(Some(client, stream, shards)) ->
                            KinesisSource.start
                                client
                                stream
                                config
                                (List.zip shards (starts |> Array.map (fun s -> s.Feed, s.Checkpoint) |> List.ofArray))
                                settings.Log
                                pollersStop.Token
                        | _ -> Task.CompletedTask

                    let! results =
                        Array.zip starts meters
                        |> Array.map (fun (start, meter) ->
                            if start.Position < 0 then
                                meter.State <- "already ended"

                                Task.FromResult
                                    {
                                        ShardId = start.Feed.ShardId
                                        Session = None
                                        Delivered = 0
                                        Checkpointed = 0
                                        Redelivered = 0
                                        Bytes = 0L
                                        Streaming = TimeSpan.Zero
                                        Ending = ShardEnding.AlreadyEnded
                                        ExitCode = None
                                    }
                            else
                                Task.Run<ShardResult>(fun () -> ShardDriver.run driver hooks meter start stop kill))
                        |> Task.WhenAll

                    clock.Stop()
                    pollersStop.Cancel()

                    try
                        do! pollers.WaitAsync(TimeSpan.FromSeconds 10.0)
                    with _ ->
                        ()

                    do! leases.CompleteAsync()

                    if filling.IsCompleted |> not then
                        settings.Log "the input was not read to its end"

                    return
                        Ok
                            {
                                ApplicationName = config.ApplicationName
                                Shards = List.ofArray results
                                Elapsed = clock.Elapsed
                            }
        }
