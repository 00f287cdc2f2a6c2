(*
    The HTTP side: one signed POST per operation, retries with backoff, and errors that name the problem.
*)
namespace Kcl.Kinesis

open System
open System.Collections.Generic
open System.Net.Http
open System.Net.Http.Headers
open System.Runtime.InteropServices
open System.Text.Json
open System.Text.Json.Nodes
open System.Threading
open System.Threading.Tasks

/// A small Amazon Kinesis client (JSON 1.1 with Signature Version 4). Thread-safe; dispose it to release its
/// HttpClient.
[<Sealed>]
type KinesisClient(options: KinesisClientOptions) =
    let region =
        [ options.Region; Environment.GetEnvironmentVariable "AWS_REGION"; Environment.GetEnvironmentVariable "AWS_DEFAULT_REGION" ]
        |> List.tryFind (String.IsNullOrWhiteSpace >> not)
        |> Option.defaultWith (fun () ->
            raise (ArgumentException "no region: set KinesisClientOptions.Region, AWS_REGION or AWS_DEFAULT_REGION"))

    let endpoint =
        match options.Endpoint with
        | null -> Uri(sprintf "https://kinesis.%s.amazonaws.com/" region)
        | e -> e

    let credentials =
        match options.Credentials with
        | null -> AwsCredentials.Resolve()
        | c -> c

    let http = new HttpClient(Timeout = options.RequestTimeout)
    let random = Random()

    let delay (attempt: int) =
        let ms =
            min options.MaxDelay.TotalMilliseconds (options.BaseDelay.TotalMilliseconds * Math.Pow(2.0, float attempt))

        TimeSpan.FromMilliseconds(ms * (0.5 + 0.5 * lock random (fun () -> random.NextDouble())))

    let sendOnce (operation: string) (payload: byte[]) (token: CancellationToken) =
        task {
            let contentType = "application/x-amz-json-1.1"

            let signed =
                SigV4.sign
                    {
                        Credentials = credentials
                        Region = region
                        Service = "kinesis"
                        Time = DateTime.UtcNow
                        Normalize = true
                        SignBody = false
                        OmitSessionToken = false
                    }
                    {
                        Method = "POST"
                        Path = "/"
                        Query = ""
                        Headers =
                            [
                                "host", endpoint.Authority
                                "content-type", contentType
                                "x-amz-target", Wire.target operation
                            ]
                        Body = payload
                    }

            use request = new HttpRequestMessage(HttpMethod.Post, endpoint)
            request.Headers.TryAddWithoutValidation("X-Amz-Target", Wire.target operation) |> ignore

            for name, value in signed.AddedHeaders do
                request.Headers.TryAddWithoutValidation(name, value) |> ignore

            request.Content <- new ByteArrayContent(payload)
            request.Content.Headers.ContentType <- MediaTypeHeaderValue contentType
            use! response = http.SendAsync(request, token)
            let! text = response.Content.ReadAsStringAsync token
            return int response.StatusCode, text, response.Content.Headers.ContentType
        }

    /// Calls an operation, retrying throttling, 5xx and network failures; returns the response's JSON text.
    let call (operation: string) (stream: string) (fields: (string * JsonNode) list) (token: CancellationToken) =
        task {
            let payload = Wire.body fields
            let mutable attempt = 0
            let mutable result = None

            while result.IsNone do
                attempt <- attempt + 1

                let! outcome =
                    task {
                        try
                            let! r = sendOnce operation payload token
                            return Ok r
                        with
                        | :? HttpRequestException as e -> return Error(e :> exn)
                        | :? TaskCanceledException as e when not token.IsCancellationRequested -> return Error(e :> exn)
                    }

                let fail (e: exn) = result <- Some(Error e)

                match outcome with
                | Error e when attempt >= options.MaxAttempts ->
                    fail (
                        KinesisException(
                            "EndpointUnreachable",
                            sprintf "Kinesis %s failed: cannot reach the endpoint %O after %d attempts (%s)" operation endpoint attempt e.Message,
                            0,
                            e
                        )
                    )
                | Error _ -> do! Task.Delay(delay attempt, token)
                | Ok(status, text, _) when status >= 200 && status < 300 -> result <- Some(Ok text)
                | Ok(status, text, contentType) ->
                    match Wire.errorOf text with
                    | Some(code, message) when Wire.isRetryable status code && attempt < options.MaxAttempts ->
                        do! Task.Delay(delay attempt, token)
                    | Some(code, message) ->
                        fail (
                            KinesisException(
                                code,
                                Wire.explain operation stream endpoint region credentials.Source code message,
                                status
                            )
                        )
                    | None when status >= 500 && attempt < options.MaxAttempts -> do! Task.Delay(delay attempt, token)
                    | None ->
                        let excerpt = if text.Length > 200 then text.Substring(0, 200) + "…" else text

                        fail (
                            KinesisException(
                                "UnexpectedResponse",
                                sprintf
                                    "Kinesis %s failed: %O answered HTTP %d (%O), not a Kinesis error; is it a Kinesis endpoint? %s"
                                    operation
                                    endpoint
                                    status
                                    contentType
                                    excerpt,
                                status
                            )
                        )

            match result.Value with
            | Ok text -> return text
            | Error e -> return raise e
        }

    let callJson operation stream fields token (read: JsonElement -> 'T) =
        task {
            let! text = call operation stream fields token

            use doc =
                JsonDocument.Parse(if String.IsNullOrWhiteSpace text then "{}" else text)

            return read doc.RootElement
        }

    /// A client with the default options: region and credentials from the environment, the region's endpoint.
    new() = new KinesisClient(KinesisClientOptions())

    /// The region requests are signed for.
    member _.Region = region
    /// The endpoint requests go to.
    member _.Endpoint = endpoint

    /// Creates a stream with the given number of shards (provisioned mode). It is CREATING until WaitForActiveAsync.
    member _.CreateStreamAsync(streamName: string, shardCount: int, [<Optional>] cancellationToken: CancellationToken) : Task =
        call "CreateStream" streamName [ "StreamName", Wire.str streamName; "ShardCount", Wire.num shardCount ] cancellationToken

    /// The stream's status and open shard count.
    member _.DescribeStreamSummaryAsync(streamName: string, [<Optional>] cancellationToken: CancellationToken) : Task<StreamSummary> =
        callJson "DescribeStreamSummary" streamName [ "StreamName", Wire.str streamName ] cancellationToken Wire.streamSummary

    /// Polls DescribeStreamSummary until the stream is ACTIVE; throws TimeoutException after `timeout`.
    member this.WaitForActiveAsync(streamName: string, timeout: TimeSpan, [<Optional>] cancellationToken: CancellationToken) : Task<StreamSummary> =
        task {
            let deadline = DateTime.UtcNow + timeout
            let mutable summary = Unchecked.defaultof<StreamSummary>
            let mutable fin = false

            while not fin do
                let! s = this.DescribeStreamSummaryAsync(streamName, cancellationToken)
                summary <- s

                if s.StreamStatus = "ACTIVE" then
                    fin <- true
                elif DateTime.UtcNow > deadline then
                    raise (TimeoutException(sprintf "stream '%s' is still %s after %O" streamName s.StreamStatus timeout))
                else
                    do! Task.Delay(TimeSpan.FromMilliseconds 100.0, cancellationToken)

            return summary
        }

    /// Every shard of the stream, open and closed (ListShards, following its pages).
    member _.ListShardsAsync(streamName: string, [<Optional>] cancellationToken: CancellationToken) : Task<IReadOnlyList<Shard>> =
        task {
            let shards = List<Shard>()
            let mutable next: string = null
            let mutable first = true

            while first || not (isNull next) do
                let fields =
                    if first then [ "StreamName", Wire.str streamName ] else [ "NextToken", Wire.str next ]

                first <- false

                let! page, token =
                    callJson "ListShards" streamName fields cancellationToken (fun root ->
                        (match root.TryGetProperty "Shards" with
                         | true, a -> a.EnumerateArray() |> Seq.map Wire.shard |> List.ofSeq
                         | _ -> []),
                        Wire.optString "NextToken" root)

                shards.AddRange page
                next <- token

            return shards :> IReadOnlyList<_>
        }

    /// Puts one record.
    member _.PutRecordAsync(streamName: string, partitionKey: string, data: byte[], [<Optional>] cancellationToken: CancellationToken) : Task<PutResult> =
        callJson
            "PutRecord"
            streamName
            [
                "StreamName", Wire.str streamName
                "PartitionKey", Wire.str partitionKey
                "Data", Wire.str (Convert.ToBase64String data)
            ]
            cancellationToken
            (fun root ->
                {
                    ShardId = Wire.reqString "ShardId" root
                    SequenceNumber = Wire.reqString "SequenceNumber" root
                })

    /// Puts up to 500 records; records the service failed (throttled) are re-sent with backoff. The results are in
    /// the entries' order. Throws PutRecordsFailed when some still fail after MaxAttempts.
    member _.PutRecordsAsync(streamName: string, entries: IReadOnlyList<PutRecordsEntry>, [<Optional>] cancellationToken: CancellationToken) : Task<IReadOnlyList<PutResult>> =
        task {
            let results: PutResult[] = Array.zeroCreate entries.Count
            let mutable pending = [ 0 .. entries.Count - 1 ]
            let mutable attempt = 0
            let mutable lastError = ""

            while not pending.IsEmpty do
                attempt <- attempt + 1

                if attempt > 1 then
                    if attempt > options.MaxAttempts then
                        raise (
                            KinesisException(
                                "PutRecordsFailed",
                                sprintf "Kinesis PutRecords failed: %d of %d records still failed after %d attempts (%s)" pending.Length entries.Count options.MaxAttempts lastError,
                                0
                            )
                        )

                    do! Task.Delay(delay (attempt - 1), cancellationToken)

                let batch = pending |> Array.ofList

                let records = JsonArray()

                for i in batch do
                    let e = entries[i]
                    records.Add(JsonObject(dict [ "PartitionKey", Wire.str e.PartitionKey; "Data", Wire.str (Convert.ToBase64String e.Data) ]))

                let! outcome =
                    callJson "PutRecords" streamName [ "StreamName", Wire.str streamName; "Records", records ] cancellationToken (fun root ->
                        root.GetProperty("Records").EnumerateArray()
                        |> Seq.map (fun r ->
                            match Wire.optString "ErrorCode" r with
                            | null -> Ok { ShardId = Wire.reqString "ShardId" r; SequenceNumber = Wire.reqString "SequenceNumber" r }
                            | code -> Error(code + ": " + Wire.optString "ErrorMessage" r))
                        |> Array.ofSeq)

                let failed = List<int>()

                for k in 0 .. batch.Length - 1 do
                    match outcome[k] with
                    | Ok r -> results[batch[k]] <- r
                    | Error e ->
                        lastError <- e
                        failed.Add batch[k]

                pending <- List.ofSeq failed

            return results :> IReadOnlyList<_>
        }

    /// An iterator for a shard; `startingSequenceNumber` is for AtSequenceNumber and AfterSequenceNumber, else null.
    member _.GetShardIteratorAsync
        (
            streamName: string,
            shardId: string,
            iteratorType: ShardIteratorType,
            startingSequenceNumber: string,
            [<Optional>] cancellationToken: CancellationToken
        ) : Task<string> =
        callJson
            "GetShardIterator"
            streamName
            [
                "StreamName", Wire.str streamName
                "ShardId", Wire.str shardId
                "ShardIteratorType", Wire.str (Wire.iteratorTypeName iteratorType)
                "StartingSequenceNumber", Wire.str startingSequenceNumber
            ]
            cancellationToken
            (Wire.reqString "ShardIterator")

    /// Reads up to `limit` records (at most 10000) from an iterator.
    member _.GetRecordsAsync(shardIterator: string, limit: int, [<Optional>] cancellationToken: CancellationToken) : Task<RecordsBatch> =
        callJson "GetRecords" "" [ "ShardIterator", Wire.str shardIterator; "Limit", Wire.num limit ] cancellationToken Wire.recordsBatch

    /// Splits a shard at a hash key (decimal): the shard closes and two children open.
    member _.SplitShardAsync(streamName: string, shardId: string, newStartingHashKey: string, [<Optional>] cancellationToken: CancellationToken) : Task =
        call
            "SplitShard"
            streamName
            [
                "StreamName", Wire.str streamName
                "ShardToSplit", Wire.str shardId
                "NewStartingHashKey", Wire.str newStartingHashKey
            ]
            cancellationToken

    /// Merges two adjacent shards: both close and one child opens.
    member _.MergeShardsAsync(streamName: string, shardId: string, adjacentShardId: string, [<Optional>] cancellationToken: CancellationToken) : Task =
        call
            "MergeShards"
            streamName
            [
                "StreamName", Wire.str streamName
                "ShardToMerge", Wire.str shardId
                "AdjacentShardToMerge", Wire.str adjacentShardId
            ]
            cancellationToken

    interface IDisposable with
        member _.Dispose() = http.Dispose()
