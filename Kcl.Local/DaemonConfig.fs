(*
    The daemon's settings as the local daemon reads them from the properties file (PROTOCOL.md §5.2): the keys it
    honours with the real daemon's defaults and checks, and the names of the keys it ignores.
*)
namespace Kcl.Local

open System
open System.Globalization
open Kcl.Core

/// Where a shard with no stored checkpoint starts (`initialPositionInStream`).
[<RequireQualifiedAccess>]
type InitialPosition =
    /// The oldest record still in the stream.
    | TrimHorizon
    /// Only records written after the daemon started.
    | Latest

    /// The sentinel the daemon puts in `initialize` for a lease with no checkpoint yet.
    member this.WireName =
        match this with
        | TrimHorizon -> "TRIM_HORIZON"
        | Latest -> "LATEST"

/// The settings of one local daemon run, read from the properties file.
type DaemonConfig =
    {
        /// `executableName`, split on runs of ASCII spaces: the child's program and arguments.
        Command: string list
        /// `applicationName`: names the lease file.
        ApplicationName: string
        /// `streamArn` or `streamName`: the stream a Kinesis source reads; otherwise only for display.
        StreamName: string
        /// `kinesisEndpoint`: a Kinesis endpoint to read the stream from (with `--kinesis-endpoint`), if set.
        KinesisEndpoint: string option
        /// `regionName`: the region requests to the endpoint are signed for, if set.
        RegionName: string option
        /// `initialPositionInStream`; the real daemon's default is LATEST.
        InitialPosition: InitialPosition
        /// `maxRecords`: the largest batch; default 10000, at most 10000.
        MaxRecords: int
        /// `idleTimeBetweenReadsInMillis`: the wait between reads of a source with nothing ready; default 1500, at
        /// least 200.
        IdleTimeBetweenReads: TimeSpan
        /// `callProcessRecordsEvenForEmptyRecordList`: send empty batches while waiting; default false.
        CallProcessRecordsEvenForEmptyRecordList: bool
        /// `timeoutInSeconds`: the limit on each wait for a child's line; `None` (the daemon's default) means the
        /// local daemon's own generous bound applies.
        Timeout: TimeSpan option
        /// The keys in the file the local daemon does not act on, in file order.
        IgnoredKeys: string list
    }

/// Reading `DaemonConfig` from properties.
[<RequireQualifiedAccess>]
module DaemonConfig =
    /// The keys the local daemon honours or checks; every other key is named as ignored.
    let honouredKeys =
        set
            [
                "executableName"
                "applicationName"
                "streamName"
                "streamArn"
                "kinesisEndpoint"
                "regionName"
                "initialPositionInStream"
                "maxRecords"
                "idleTimeBetweenReadsInMillis"
                "callProcessRecordsEvenForEmptyRecordList"
                "timeoutInSeconds"
            ]

    /// Splits `executableName` as `MultiLangRecordProcessorFactory` does, on the regex " +": runs of ASCII spaces
    /// only, no quoting, no expansion. Like Java's `String.split`, a leading space gives an empty first element
    /// and trailing spaces give none.
    let splitCommand (executableName: string) : string list =
        let parts =
            Text.RegularExpressions.Regex.Split(executableName, " +") |> List.ofArray
        // String.split drops trailing empty strings.
        parts |> List.rev |> List.skipWhile ((=) "") |> List.rev

    let private isAwsCredentialsKey (key: string) =
        key.StartsWith("awscredentialsprovider", StringComparison.OrdinalIgnoreCase)

    /// Checks and reads the properties as the real daemon would, with its error messages; `Error` lists every
    /// problem found.
    let ofProperties (properties: (string * string) list) : Result<DaemonConfig, string list> =
        let values = Map.ofList properties

        let find key =
            values |> Map.tryFind key |> Option.map _.Trim()

        let nonBlank key =
            find key |> Option.filter (String.IsNullOrWhiteSpace >> not)

        let errors = ResizeArray<string>()

        let command =
            match values |> Map.tryFind "executableName" with
            | None ->
                errors.Add "Must provide an executable name in the properties file, e.g. executableName = sampleapp.py"
                []
            | Some name ->
                match splitCommand (name.Trim()) with
                | []
                | "" :: _ ->
                    errors.Add "executableName is blank"
                    []
                | command -> command

        let applicationName =
            match nonBlank "applicationName" with
            | Some name -> name
            | None ->
                errors.Add "Application name is required"
                ""

        let streamName =
            match nonBlank "streamArn", nonBlank "streamName" with
            | Some arn, _ -> arn
            | None, Some name -> name
            | None, None ->
                errors.Add "Stream name or Stream Arn is required. Stream Arn takes precedence if both are passed in."

                ""

        if properties |> List.exists (fst >> isAwsCredentialsKey) |> not then
            errors.Add "A basic set of AWS credentials must be provided"

        let integer key (fallback: int) check =
            match find key with
            | None -> fallback
            | Some text ->
                match Int32.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture) with
                | true, value ->
                    match check value with
                    | Some problem ->
                        errors.Add(sprintf "%s = %s: %s" key text problem)
                        fallback
                    | None -> value
                | _ ->
                    errors.Add(sprintf "%s = %s is not an integer" key text)
                    fallback

        let initialPosition =
            match find "initialPositionInStream" |> Option.map _.ToUpperInvariant() with
            | None
            | Some "LATEST" -> InitialPosition.Latest
            | Some "TRIM_HORIZON" -> InitialPosition.TrimHorizon
            | Some other ->
                errors.Add(sprintf "initialPositionInStream = %s: expected LATEST or TRIM_HORIZON" other)
                InitialPosition.Latest

        let maxRecords =
            integer "maxRecords" 10000 (fun v ->
                if v > 10000 then Some "maxRecords must be at most 10000"
                elif v <= 0 then Some "maxRecords must be positive"
                else None)

        // PollingConfig raises anything below 200 to 200.
        let idle = integer "idleTimeBetweenReadsInMillis" 1500 (fun _ -> None) |> max 200

        let callEmpty =
            match
                find "callProcessRecordsEvenForEmptyRecordList"
                |> Option.map _.ToLowerInvariant()
            with
            | Some "true" -> true
            | _ -> false

        let timeout =
            match find "timeoutInSeconds" with
            | None -> None
            | Some _ ->
                let seconds =
                    integer "timeoutInSeconds" 0 (fun v -> if v <= 0 then Some "must be positive" else None)

                if seconds > 0 then
                    Some(TimeSpan.FromSeconds(float seconds))
                else
                    None

        if errors.Count > 0 then
            Error(List.ofSeq errors)
        else
            Ok
                {
                    Command = command
                    ApplicationName = applicationName
                    StreamName = streamName
                    KinesisEndpoint = nonBlank "kinesisEndpoint"
                    RegionName = nonBlank "regionName"
                    InitialPosition = initialPosition
                    MaxRecords = maxRecords
                    IdleTimeBetweenReads = TimeSpan.FromMilliseconds(float idle)
                    CallProcessRecordsEvenForEmptyRecordList = callEmpty
                    Timeout = timeout
                    IgnoredKeys =
                        properties
                        |> List.map fst
                        |> List.filter (fun k -> not (honouredKeys.Contains k))
                }

    /// Reads and checks a properties file.
    let load (path: string) : Result<DaemonConfig, string list> =
        if not (IO.File.Exists path) then
            Error [ sprintf "the properties file %s does not exist" path ]
        else
            match JavaProperties.load path with
            | Error problem -> Error [ sprintf "%s: %s" path problem ]
            | Ok properties -> ofProperties properties
