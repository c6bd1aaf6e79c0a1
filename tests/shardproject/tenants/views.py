"""A request that writes orders for several customers (on several shards), and one that
reads a customer's orders back: read-your-writes across shards, by the middleware's
token."""

import json

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from tenants.models import Customer, Order


@csrf_exempt
def orders(request):
    made = []
    for customer_id in json.loads(request.body)["customers"]:
        customer = Customer.objects.get(id=customer_id)
        made.append(Order.objects.create(customer=customer, total=1).id)
    return JsonResponse({"orders": made})


def customer_orders(request, customer):
    return JsonResponse({"orders": list(Order.objects.filter(customer=customer).values_list("id", flat=True))})
