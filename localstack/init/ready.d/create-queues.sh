#!/bin/bash
# Runs inside LocalStack when it is ready: the orders queue, its dead-letter queue, and the redrive
# policy that moves a message there after 5 failed receives. Names must match docker-compose.yml.
set -euo pipefail

awslocal sqs create-queue --queue-name orders-dlq
DLQ_ARN=$(awslocal sqs get-queue-attributes \
  --queue-url http://localhost:4566/000000000000/orders-dlq \
  --attribute-names QueueArn --query 'Attributes.QueueArn' --output text)

awslocal sqs create-queue --queue-name orders \
  --attributes "{\"VisibilityTimeout\":\"30\",\"RedrivePolicy\":\"{\\\"deadLetterTargetArn\\\":\\\"${DLQ_ARN}\\\",\\\"maxReceiveCount\\\":\\\"5\\\"}\"}"

echo "queues ready: orders -> orders-dlq after 5 receives"
