(*
    Kinesis JSON 1.1: request bodies and the decoding of responses and errors. Pure.
*)
namespace Kcl.Kinesis

open System
open System.Text.Json
open System.Text.Json.Nodes

[<RequireQualifiedAccess>]
module internal Wire =
    let target (operation: string) = "Kinesis_20131202." + operation

    let body (fields: (string * JsonNode) list) =
        let o = JsonObject()

        for name, value in fields do
            if not (isNull value) then
                o[name] <- value

        Text.Encoding.UTF8.GetBytes(o.ToJsonString())

    let str (s: string) : JsonNode =
        if isNull s then null else JsonValue.Create s

    let num (n: int) : JsonNode = JsonValue.Create n

    let private tryProp (name: string) (e: JsonElement) =
        match e.TryGetProperty name with
        | true, v when v.ValueKind <> JsonValueKind.Null -> Some v
        | _ -> None

    let optString name e =
        match tryProp name e with
        | Some v -> v.GetString()
        | None -> null

    let reqString name e =
        match tryProp name e with
        | Some v -> v.GetString()
        | None -> raise (JsonException(sprintf "the response has no %s" name))

    /// The error type of an error body: after the last '#' of "__type" (or "code"), as the SDKs read it.
    let errorOf (text: string) : (string * string) option =
        try
            use doc = JsonDocument.Parse text
            let root = doc.RootElement

            let kind =
                match optString "__type" root with
                | null -> optString "code" root
                | t -> t

            if isNull kind then
                None
            else
                let kind = kind.Substring(kind.LastIndexOf '#' + 1)

                let message =
                    match optString "message" root with
                    | null -> optString "Message" root
                    | m -> m

                Some(kind, (if isNull message then "" else message))
        with :? JsonException ->
            None

    let streamSummary (root: JsonElement) =
        let d = root.GetProperty "StreamDescriptionSummary"

        {
            StreamName = reqString "StreamName" d
            StreamArn = optString "StreamARN" d
            StreamStatus = reqString "StreamStatus" d
            OpenShardCount =
                match tryProp "OpenShardCount" d with
                | Some v -> v.GetInt32()
                | None -> 0
        }

    let shard (e: JsonElement) =
        let range = e.GetProperty "HashKeyRange"
        let seqs = e.GetProperty "SequenceNumberRange"

        {
            ShardId = reqString "ShardId" e
            ParentShardId = optString "ParentShardId" e
            AdjacentParentShardId = optString "AdjacentParentShardId" e
            StartingHashKey = reqString "StartingHashKey" range
            EndingHashKey = reqString "EndingHashKey" range
            StartingSequenceNumber = reqString "StartingSequenceNumber" seqs
            EndingSequenceNumber = optString "EndingSequenceNumber" seqs
        }

    /// Epoch seconds as a JSON number (the JSON protocol's timestamps), or an ISO string from some emulators.
    let timestamp (e: JsonElement) =
        match e.ValueKind with
        | JsonValueKind.Number -> DateTimeOffset.FromUnixTimeMilliseconds(int64 (Math.Round(e.GetDouble() * 1000.0)))
        | JsonValueKind.String -> DateTimeOffset.Parse(e.GetString(), Globalization.CultureInfo.InvariantCulture)
        | _ -> DateTimeOffset.MinValue

    let record (e: JsonElement) =
        {
            SequenceNumber = reqString "SequenceNumber" e
            PartitionKey = reqString "PartitionKey" e
            Data = Convert.FromBase64String(reqString "Data" e)
            ApproximateArrivalTimestamp =
                match tryProp "ApproximateArrivalTimestamp" e with
                | Some v -> timestamp v
                | None -> DateTimeOffset.MinValue
        }

    let recordsBatch (root: JsonElement) =
        {
            Records =
                (match tryProp "Records" root with
                 | Some a -> a.EnumerateArray() |> Seq.map record |> Array.ofSeq
                 | None -> [||])
                :> Collections.Generic.IReadOnlyList<_>
            NextShardIterator = optString "NextShardIterator" root
            MillisBehindLatest =
                match tryProp "MillisBehindLatest" root with
                | Some v -> v.GetInt64()
                | None -> 0L
        }

    let iteratorTypeName (t: ShardIteratorType) =
        match t with
        | ShardIteratorType.TrimHorizon -> "TRIM_HORIZON"
        | ShardIteratorType.Latest -> "LATEST"
        | ShardIteratorType.AtSequenceNumber -> "AT_SEQUENCE_NUMBER"
        | ShardIteratorType.AfterSequenceNumber -> "AFTER_SEQUENCE_NUMBER"
        | other -> invalidArg "iteratorType" (sprintf "unknown iterator type %A" other)

    /// Retried with backoff: throttling, and the service's own failures.
    let isRetryable (status: int) (errorCode: string) =
        status >= 500
        || (match errorCode with
            | "ProvisionedThroughputExceededException"
            | "ThrottlingException"
            | "LimitExceededException"
            | "KMSThrottlingException"
            | "InternalFailure"
            | "ServiceUnavailable" -> true
            | _ -> false)

    /// The client's message for a service error: what the code means for the caller, then the service's words.
    let explain (operation: string) (stream: string) (endpoint: Uri) (region: string) (credentialsSource: string) (code: string) (message: string) =
        let hint =
            match code with
            | "ResourceNotFoundException" ->
                sprintf "stream '%s' does not exist at %s (region %s)" stream (string endpoint) region
            | "ResourceInUseException" -> sprintf "stream '%s' is busy or already exists" stream
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "IncompleteSignature"
            | "MissingAuthenticationToken"
            | "ExpiredTokenException"
            | "AccessDeniedException" -> sprintf "the credentials (from %s) were rejected" credentialsSource
            | "ExpiredIteratorException" ->
                "the shard iterator has expired (they last 5 minutes): get a new one with GetShardIterator"
            | _ -> code

        sprintf "Kinesis %s failed: %s (%s: %s)" operation hint code message
