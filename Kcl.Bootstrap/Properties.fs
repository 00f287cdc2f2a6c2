(*
    Properties --- the daemon's properties file, checked before launch.

    The daemon ignores unknown keys silently and fails on missing required ones only after the JVM has started, so
    both are reported here first, with the traps PROTOCOL.md §5.2 and §9 list.
*)
namespace Kcl.Bootstrap

open System
open System.IO
open System.Text

/// How serious a finding is.
[<RequireQualifiedAccess>]
type Severity =
    /// The daemon cannot run with this; the bootstrap refuses to launch (exit code 5).
    | Error
    /// Probably a mistake, or a known trap; the launch goes on.
    | Warning

/// One problem found in a properties file.
type Finding =
    {
        /// Error or warning.
        Severity: Severity
        /// What is wrong, naming the key.
        Message: string
    }

/// Reading and validating the daemon's properties file.
[<RequireQualifiedAccess>]
module Properties =
    /// Parses java.util.Properties text with the daemon's own syntax (Kcl.Core's reader, which kcl-local uses too).
    /// A malformed \uXXXX escape is the only error.
    let parse (text: string) : Result<Map<string, string>, string> =
        Kcl.Core.JavaProperties.parse text |> Result.map Map.ofList

    /// The keys the daemon applies (MultiLangDaemonConfig and MultiLangDaemonConfiguration, PROTOCOL.md §5.2).
    let knownKeys =
        set
            [
                "executableName"
                "processingLanguage"
                "maxActiveThreads"
                "applicationName"
                "streamName"
                "streamArn"
                "tableName"
                "workerId"
                "AwsCredentialsProvider"
                "AwsCredentialsProviderDynamoDB"
                "AwsCredentialsProviderCloudWatch"
                "regionName"
                "kinesisEndpoint"
                "dynamoDBEndpoint"
                "retrievalMode"
                "maxRecords"
                "idleTimeBetweenReadsInMillis"
                "retryGetRecordsInSeconds"
                "maxGetRecordsThreadPool"
                "millisBehindLatestThresholdForReducedTps"
                "callProcessRecordsEvenForEmptyRecordList"
                "initialPositionInStream"
                "initialPositionInStreamExtended"
                "timeoutInSeconds"
                "shutdownGraceMillis"
                "failoverTimeMillis"
                "shardSyncIntervalMillis"
                "cleanupLeasesUponShardCompletion"
                "ignoreUnexpectedChildShards"
                "maxLeasesForWorker"
                "maxLeasesToStealAtOneTime"
                "initialLeaseTableReadCapacity"
                "initialLeaseTableWriteCapacity"
                "maxLeaseRenewalThreads"
                "listShardsBackoffTimeInMillis"
                "maxListShardsRetryAttempts"
                "leaseTableScanTotalSegments"
                "leaseAssignmentIntervalMillis"
                "enablePriorityLeaseAssignment"
                "leaseTableDeletionProtectionEnabled"
                "leaseTablePitrEnabled"
                "parentShardPollIntervalMillis"
                "skipShardSyncAtWorkerInitializationIfLeasesExist"
                "schedulerInitializationBackoffTimeMillis"
                "taskBackoffTimeMillis"
                "logWarningForTaskAfterMillis"
                "metricsBufferTimeMillis"
                "metricsMaxQueueSize"
                "metricsLevel"
                "metricsEnabledDimensions"
                "validateSequenceNumberBeforeCheckpointing"
                "clientVersionConfig"
                "coordinatorStateTableName"
                "coordinatorStateBillingMode"
                "coordinatorStateReadCapacity"
                "coordinatorStateWriteCapacity"
                "coordinatorStatePointInTimeRecoveryEnabled"
                "coordinatorStateDeletionProtectionEnabled"
                "coordinatorStateTags"
                "gracefulLeaseHandoffTimeoutMillis"
                "isGracefulLeaseHandoffEnabled"
                "workerMetricsTableName"
                "workerMetricsBillingMode"
                "workerMetricsReadCapacity"
                "workerMetricsWriteCapacity"
                "workerMetricsPointInTimeRecoveryEnabled"
                "workerMetricsDeletionProtectionEnabled"
                "workerMetricsTags"
                "inMemoryWorkerMetricsCaptureFrequencyMillis"
                "workerMetricsReporterFreqInMillis"
                "noOfPersistedMetricsPerWorkerMetrics"
                "disableWorkerMetrics"
                "maxThroughputPerHostKBps"
                "dampeningPercentage"
                "reBalanceThresholdPercentage"
                "allowThroughputOvershoot"
                "varianceBalancingFrequency"
                "workerMetricsEMAAlpha"
                "staleWorkerMetricsEntryCleanupDuration"
                "migrateAllEntitiesToLeaseTable"
                "tableMigrationCompleteBakeTimeSeconds"
            ]

    /// Levenshtein distance, case-insensitive, for "did you mean".
    let internal distance (a: string) (b: string) =
        let a, b = a.ToLowerInvariant(), b.ToLowerInvariant()

        let d =
            Array2D.init (a.Length + 1) (b.Length + 1) (fun i j ->
                if i = 0 then j
                elif j = 0 then i
                else 0)

        for i in 1 .. a.Length do
            for j in 1 .. b.Length do
                let cost = if a[i - 1] = b[j - 1] then 0 else 1
                d[i, j] <- min (min (d[i - 1, j] + 1) (d[i, j - 1] + 1)) (d[i - 1, j - 1] + cost)

        d[a.Length, b.Length]

    /// The closest known key, if it is close enough to be a likely typo.
    let suggest (key: string) =
        knownKeys
        |> Seq.map (fun k -> k, distance key k)
        |> Seq.minBy snd
        |> fun (k, d) -> if d <= max 2 (key.Length / 4) then Some k else None

    /// How the daemon will find the program of executableName: the first space-separated token, as a path (relative
    /// to the working directory) when it holds a separator, else on the PATH. Pure: lookups are passed in.
    let resolveProgram
        (platform: Platform)
        (workingDirectory: string)
        (getEnv: string -> string option)
        (fileExists: string -> bool)
        (program: string)
        : string option =
        let isPath = program.Contains '/' || program.Contains platform.DirectorySeparator

        let rooted (p: string) =
            p.StartsWith "/"
            || p.StartsWith(string platform.DirectorySeparator)
            || (p.Length > 1 && p[1] = ':')

        if isPath then
            let full =
                if rooted program then
                    program
                else
                    Platform.combine platform [ workingDirectory; program ]

            if fileExists full then Some full else None
        else
            let names =
                if platform.IsWindows && not (program.Contains '.') then
                    [ program; program + ".exe"; program + ".cmd" ]
                else
                    [ program ]

            getEnv "PATH"
            |> Option.map (fun p -> p.Split(platform.PathListSeparator, StringSplitOptions.RemoveEmptyEntries))
            |> Option.defaultValue [||]
            |> Seq.collect (fun dir -> names |> Seq.map (fun n -> Platform.combine platform [ dir; n ]))
            |> Seq.tryFind fileExists

    let private has (properties: Map<string, string>) key =
        properties.TryFind key |> Option.exists (String.IsNullOrWhiteSpace >> not)

    /// Checks the properties as the daemon will read them (PROTOCOL.md §1, §5.2, §9). Pure: lookups are passed in.
    let validate
        (platform: Platform)
        (workingDirectory: string)
        (getEnv: string -> string option)
        (fileExists: string -> bool)
        (properties: Map<string, string>)
        : Finding list =
        let error m =
            {
                Severity = Severity.Error
                Message = m
            }

        let warning m =
            {
                Severity = Severity.Warning
                Message = m
            }

        let required =
            [
                if not (has properties "executableName") then
                    error "executableName is missing: the daemon needs the processor's command line"
                if not (has properties "applicationName") then
                    error "applicationName is missing: the daemon requires it (it also names the lease table)"
                if not (has properties "streamName" || has properties "streamArn") then
                    error "streamName or streamArn is missing: the daemon requires one of them"
                // The daemon lower-cases keys that start with awscredentialsprovider (processKey).
                if
                    not (
                        properties
                        |> Map.exists (fun k v -> k.ToLowerInvariant() = "awscredentialsprovider" && v.Trim() <> "")
                    )
                then
                    error "AwsCredentialsProvider is missing: the daemon requires it, e.g. DefaultCredentialsProvider"
            ]

        let executable =
            match properties.TryFind "executableName" |> Option.map _.Trim() with
            | Some command when command <> "" ->
                // MultiLangRecordProcessorFactory splits on " +": no quoting, no shell.
                let tokens = command.Split(' ', StringSplitOptions.RemoveEmptyEntries)
                let resolve = resolveProgram platform workingDirectory getEnv fileExists
                let quoted = command.StartsWith "\"" || command.StartsWith "'"

                // A program path with a space: some longer space-joined prefix is the file that exists.
                let spaced =
                    [ 2 .. tokens.Length ]
                    |> List.map (fun n -> String.Join(" ", tokens[.. n - 1]).Trim('"', '\''))
                    |> List.tryFind (resolve >> Option.isSome)

                match spaced with
                | Some path ->
                    [
                        error (
                            sprintf
                                "executableName: the program path '%s' contains a space; the daemon splits executableName on spaces and cannot run it (move or link it to a path without spaces)"
                                path
                        )
                    ]
                | None when quoted ->
                    [
                        error
                            "executableName starts with a quote: the daemon does not interpret quotes, it splits on spaces"
                    ]
                | None ->
                    match resolve tokens[0] with
                    | Some _ -> []
                    | None ->
                        [
                            warning (
                                sprintf
                                    "executableName: the program '%s' does not exist (resolved against %s)"
                                    tokens[0]
                                    (if tokens[0].Contains '/' || tokens[0].Contains platform.DirectorySeparator then
                                         workingDirectory
                                     else
                                         "the PATH")
                            )
                        ]
            | _ -> []

        let unknown =
            properties
            |> Map.toList
            |> List.filter (fun (k, _) ->
                not (knownKeys.Contains k)
                && not (k.ToLowerInvariant().StartsWith "awscredentialsprovider")
                && not (k.Contains '.'))
            |> List.map (fun (k, _) ->
                match suggest k with
                | Some s ->
                    warning (
                        sprintf "unknown key '%s' (did you mean '%s'?); the daemon ignores unknown keys silently" k s
                    )
                | None -> warning (sprintf "unknown key '%s'; the daemon ignores unknown keys silently" k))

        let traps =
            [
                match properties.TryFind "cleanupLeasesUponShardCompletion" with
                | Some v when v.Trim().ToLowerInvariant() = "false" ->
                    warning
                        "cleanupLeasesUponShardCompletion=false is ignored by the daemon: false is the Java default, so it is never applied"
                | _ -> ()
                if not (has properties "shutdownGraceMillis") then
                    warning
                        "shutdownGraceMillis is unset (default 0): on SIGTERM the daemon does not wait for processors to finish shutdownRequested"
                match properties.TryFind "validateSequenceNumberBeforeCheckpointing" with
                | Some _ -> warning "validateSequenceNumberBeforeCheckpointing has no effect in KCL 2.x and 3.x"
                | None -> ()
            ]

        required @ executable @ unknown @ traps

    /// Reads and validates a properties file against the real environment.
    let check (propertiesFile: string) : Finding list =
        // Properties.load(InputStream) reads ISO-8859-1, so any byte is one character.
        match parse (File.ReadAllText(propertiesFile, Encoding.Latin1)) with
        | Error problem ->
            [
                {
                    Severity = Severity.Error
                    Message = sprintf "%s cannot be read as a properties file: %s" propertiesFile problem
                }
            ]
        | Ok properties ->
            validate
                Platform.current
                Environment.CurrentDirectory
                (Environment.GetEnvironmentVariable >> Option.ofObj)
                File.Exists
                properties
